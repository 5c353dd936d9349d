"""A JSON formatter for stdout with the fields ops teams search by.

Every line carries `timestamp` (ISO-8601 UTC, ms), `level`, `message`, `logger`, `service`,
`environment`, and — when known — `correlation_id` (the trace id), `span_id`, `tenant_id`,
`user_id` (only with capture_user_id), the request fields of the access line (`method`, `path`,
`status_code`, `latency_ms`) and `exception_type` / `exception_message` / `stack_trace`.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext

from otel_crm._internal.tenancy import current_tenant

__all__ = ["ACCESS_FIELDS", "ACCESS_LOGGER", "JsonFormatter"]

ACCESS_FIELDS = ("method", "path", "status_code", "latency_ms")
ACCESS_LOGGER = "otel_crm.access"


class JsonFormatter(logging.Formatter):
    def __init__(self, *, service: str, environment: str, capture_user_id: bool = False,
                 scrub: Any = None):
        super().__init__()
        self._service = service
        self._environment = environment
        self._capture_user_id = capture_user_id
        self._scrub = scrub  # Callable[[str], str] | None
        self._second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        payload = self._payload(record.created, record.levelname.lower(), record.getMessage(), record.name,
                                trace.get_current_span().get_span_context())
        for key in ACCESS_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                payload[key] = self._clean(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            payload["exception_type"] = exc_type.__name__
            payload["exception_message"] = self._clean(str(exc))
            payload["stack_trace"] = self._clean("".join(traceback.format_exception(exc_type, exc, tb)))
        return json.dumps(payload, default=str, ensure_ascii=False)

    def access_line(self, method: str, path: str, status: int, latency_ms: float, *,
                    span_context: SpanContext, created: float | None = None) -> str:
        """The line `format()` writes for the access record, without building a LogRecord: the
        access line is written once per request, on the request path."""
        payload = self._payload(time.time() if created is None else created, "info",
                                f"{method} {path} {status}", ACCESS_LOGGER, span_context)
        payload["method"] = self._clean(method)
        payload["path"] = self._clean(path)
        payload["status_code"] = status
        payload["latency_ms"] = latency_ms
        return json.dumps(payload, ensure_ascii=False)

    def _payload(self, created: float, level: str, message: str, logger: str,
                 span_context: SpanContext) -> dict[str, Any]:
        seconds = int(created)
        millis = int((created - seconds) * 1000)
        second = self._second
        if second[0] != seconds:  # one strftime per second, not per line
            second = self._second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
        payload: dict[str, Any] = {
            "timestamp": f"{second[1]}.{millis:03d}Z",
            "level": level,
            "message": self._clean(message),
            "logger": logger,
            "service": self._service,
            "environment": self._environment,
        }
        if span_context.is_valid:
            payload["correlation_id"] = format(span_context.trace_id, "032x")
            payload["span_id"] = format(span_context.span_id, "016x")
        tenant = current_tenant()
        if tenant is not None:
            payload["tenant_id"] = tenant.id
            if self._capture_user_id and tenant.user_id:
                payload["user_id"] = tenant.user_id
        return payload

    def _clean(self, text: str) -> str:
        return self._scrub(text) if self._scrub is not None else text
