"""Logging to stdout: the JSON line format ops teams search by, the scrubbed text format, and the
handler that writes them without a syscall per line.

Every JSON line carries `timestamp` (ISO-8601 UTC, ms), `level`, `message`, `logger`, `service`,
`environment`, and — when known — `correlation_id` (the trace id), `span_id`, `trace_sampled`
(the trace's final sampling decision: absent while undecided, see `Runtime.trace_sampled`), `tenant_id`,
`user_id` (only with capture_user_id), the request fields of the access line (`method`, `path`,
`status_code`, `latency_ms`) and `exception_type` / `exception_message` / `stack_trace`.

What goes *into* the access line lives in `access.py`; this module only renders lines.
"""

from __future__ import annotations

import contextlib
import json
import json.encoder
import logging
import math
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import IO, Any

from opentelemetry.trace import SpanContext

from otel_crm._internal import semconv
from otel_crm._internal.request_span import request_span_context
from otel_crm._internal.runtime import current_runtime
from otel_crm._internal.settings import Settings
from otel_crm._internal.tenancy import TenantForm, current_tenant, tenant_form

__all__ = ["REQUEST_FIELDS", "TEXT_FORMAT", "JsonFormatter", "LazyFlushStreamHandler", "ScrubbingTextFormatter",
           "escape_controls", "stdout_handler", "strip_ansi"]

# The extras a log record may carry into a JSON line (the access line passes them as `extra=`).
REQUEST_FIELDS = ("method", "path", "status_code", "latency_ms")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"

Scrub = Callable[[str], str]
# json.dumps() with any keyword argument builds a new JSONEncoder per call (about 1 µs, a tenth of an
# access line): build each encoder once; they hold no state between calls, so threads share them.
_encode_line = json.JSONEncoder(ensure_ascii=False).encode
_encode_record = json.JSONEncoder(ensure_ascii=False, default=str).encode
# The string encoder those use (ensure_ascii=False): `line()` writes the same text piece by piece.
_encode_str: Callable[[str], str] = json.encoder.encode_basestring
_FIELD_PREFIXES = {key: f", {_encode_str(key)}: " for key in REQUEST_FIELDS}  # `, "key": ` per field name
_ACCESS_LOGGER = "otel_crm.access"  # access.ACCESS_LOGGER (access.py imports this module)
# ANSI escape sequences (werkzeug colours its request and startup lines for a terminal): a log
# line is searched and parsed, never displayed as-is, so they go.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text) if "\x1b" in text else text


class JsonFormatter(logging.Formatter):
    def __init__(self, *, service: str, environment: str, capture_user_id: bool = False,
                 scrub: Scrub | None = None, tenant: TenantForm | None = None):
        super().__init__()
        self._tenant = tenant or tenant_form(None)
        self._service = service
        self._environment = environment
        self._capture_user_id = capture_user_id
        self._scrub = scrub
        self._second: tuple[int, str] = (-1, "")
        # line(): the JSON text after the message up to the trace fields, per logger name
        # (`"logger": …, "service": …, "environment": …`): the same for every line of that logger.
        self._constant: dict[str, str] = {}

    def format(self, record: logging.LogRecord) -> str:
        payload = self._payload(record.created, record.levelname.lower(), record.getMessage(), record.name,
                                request_span_context())
        for key in REQUEST_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                payload[key] = self._clean(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            payload["exception_type"] = exc_type.__name__
            payload["exception_message"] = self._clean(str(exc))
            payload["stack_trace"] = self._clean("".join(traceback.format_exception(exc_type, exc, tb)))
        return _encode_record(payload)

    def line(self, message: str, logger: str, fields: Mapping[str, str | int | float], *,
             span_context: SpanContext, created: float | None = None) -> str:
        """The line `format()` writes for an INFO record of `logger` with these request fields,
        without building a LogRecord (for lines written on the request path: the access line).

        Written as text, not through a dict and the JSON encoder: the same keys in the same order,
        each value encoded as the encoder does (its own string escaper, `repr` of ints and finite
        floats); any other value type takes the dict-and-encoder path."""
        if created is None:
            created = time.time()
        scrub = self._scrub
        parts = [self._head(created), _encode_str(self._clean(message)), self._constant.get(logger)
                 or self._constant_of(logger)]
        self._trace_and_tenant(parts, span_context)
        for key, value in fields.items():
            if type(value) is str:
                text = _encode_str(scrub(value) if scrub is not None else value)
            elif type(value) is int or (type(value) is float and math.isfinite(value)):
                text = repr(value)  # as the encoder writes them (finite floats only)
            else:  # a bool, None, NaN, a subclass: what the encoder does with it, exactly
                return self._line_encoded(message, logger, fields, span_context, created)
            prefix = _FIELD_PREFIXES.get(key)
            if prefix is None:
                prefix = f", {_encode_str(key)}: "
                if len(_FIELD_PREFIXES) < 64:  # the request fields' few names
                    _FIELD_PREFIXES[key] = prefix
            parts.append(prefix)
            parts.append(text)
        parts.append("}")
        return "".join(parts)

    def access_line(self, method: str, path: str, status: int, latency_ms: float, *,
                    span_context: SpanContext, created: float | None = None) -> str:
        """`line(f"{method} {path} {status}", "otel_crm.access", {"method": method, "path": path,
        "status_code": status, "latency_ms": latency_ms}, span_context=span_context)`, for exactly
        these types (str, str, int, a finite float: the caller checks), without the fields dict and
        the per-field type dispatch. One text per request, tested byte for byte against `line()`."""
        parts = [self._head(time.time() if created is None else created),
                 _encode_str(self._clean(f"{method} {path} {status}")),
                 self._constant.get(_ACCESS_LOGGER) or self._constant_of(_ACCESS_LOGGER)]
        self._trace_and_tenant(parts, span_context)
        scrub = self._scrub
        if scrub is not None:
            method, path = scrub(method), scrub(path)
        parts.append(f', "method": {_encode_str(method)}, "path": {_encode_str(path)}, "status_code": {status!r}, '
                     f'"latency_ms": {latency_ms!r}}}')
        return "".join(parts)

    def _trace_and_tenant(self, parts: list[str], span_context: SpanContext) -> None:
        """The trace fields and the tenant of a `line()` (what `_payload` puts there), appended."""
        if span_context.is_valid:
            trace_id = span_context.trace_id
            parts.append(f', "correlation_id": "{trace_id:032x}", "span_id": "{span_context.span_id:016x}"')
            sampled = current_runtime().trace_sampled(trace_id, bool(span_context.trace_flags & 1))
            if sampled is not None:
                parts.append(', "trace_sampled": true' if sampled else ', "trace_sampled": false')
        tenant = current_tenant()
        if tenant is not None:
            parts.append(', "tenant_id": ')
            parts.append(_encode_str(self._tenant(tenant.id)))
            if self._capture_user_id and tenant.user_id:
                parts.append(', "user_id": ')
                parts.append(_encode_str(self._tenant(tenant.user_id, semconv.USER_ID)))

    def _line_encoded(self, message: str, logger: str, fields: Mapping[str, str | int | float],
                      span_context: SpanContext, created: float) -> str:
        payload = self._payload(created, "info", message, logger, span_context)
        scrub = self._scrub
        if scrub is None:
            payload.update(fields)
        else:
            for key, value in fields.items():
                payload[key] = scrub(value) if isinstance(value, str) else value
        return _encode_line(payload)

    def _head(self, created: float) -> str:
        """`{"timestamp": "…", "level": "info", "message": ` of a line `created` then."""
        seconds = int(created)  # _timestamp(), inlined: once per line on the request path
        millis = int((created - seconds) * 1000)
        second = self._second
        if second[0] != seconds:
            second = self._second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
        return f'{{"timestamp": "{second[1]}.{millis:03d}Z", "level": "info", "message": '

    def _timestamp(self, created: float) -> str:
        seconds = int(created)
        millis = int((created - seconds) * 1000)
        second = self._second
        if second[0] != seconds:  # one strftime per second, not per line
            second = self._second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
        return f"{second[1]}.{millis:03d}Z"

    def _constant_of(self, logger: str) -> str:
        text = (f', "logger": {_encode_str(logger)}, "service": {_encode_str(self._service)}, '
                f'"environment": {_encode_str(self._environment)}')
        if len(self._constant) < 64:  # a few logger names write lines this way (the access logger)
            self._constant[logger] = text
        return text

    def _payload(self, created: float, level: str, message: str, logger: str,
                 span_context: SpanContext) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "timestamp": self._timestamp(created),
            "level": level,
            "message": self._clean(message),
            "logger": logger,
            "service": self._service,
            "environment": self._environment,
        }
        if span_context.is_valid:
            payload["correlation_id"] = format(span_context.trace_id, "032x")
            payload["span_id"] = format(span_context.span_id, "016x")
            # Only a known decision: a record written while the trace is undecided claims none.
            sampled = current_runtime().trace_sampled(span_context.trace_id, bool(span_context.trace_flags & 1))
            if sampled is not None:
                payload["trace_sampled"] = sampled
        tenant = current_tenant()
        if tenant is not None:
            payload["tenant_id"] = self._tenant(tenant.id)  # as on spans, logs and metrics
            if self._capture_user_id and tenant.user_id:
                payload["user_id"] = self._tenant(tenant.user_id, semconv.USER_ID)
        return payload

    def _clean(self, text: str) -> str:
        text = strip_ansi(text)
        return self._scrub(text) if self._scrub is not None else text


# CR, LF and every other control character (C0, DEL, C1, the Unicode line and paragraph separators)
# as a visible escape: one record is one line, so a decoded %0A in a path cannot forge a second one.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7f, 0xa0))}
_ESCAPES.update({0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape_controls(text: str) -> str:
    """`text` on one line: CR, LF and control characters escaped (``\\n``, ``\\r``, ``\\x1b``…)."""
    return text if text.isprintable() else text.translate(_ESCAPES)


class ScrubbingTextFormatter(logging.Formatter):
    """The text format, scrubbed like the JSON one (nothing leaves the process unscrubbed), one
    line per record: CR, LF and control characters escaped, a stack trace included."""

    def __init__(self, fmt: str = TEXT_FORMAT, datefmt: str | None = None, style: Any = "%", *,
                 scrub: Scrub | None = None):
        super().__init__(fmt, datefmt, style)
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        text = strip_ansi(super().format(record))
        return escape_controls(self._scrub(text) if self._scrub is not None else text)


class LazyFlushStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stdout handler that does not flush after every line (a syscall per log record on the
    request path): it flushes warnings and errors at once, anything else at most every 0.5 s,
    and everything at exit (logging.shutdown calls flush())."""

    flush_interval = 0.5

    def __init__(self, stream: IO[str] | None = None, *, scrub: Scrub | None = None):
        super().__init__(stream)
        self.scrub = scrub  # for a format the app sets later (basic_config.py)
        self._last_flush = time.monotonic()
        self._timer: threading.Timer | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.format(record), record.levelno)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_line(self, text: str, levelno: int = logging.INFO) -> None:
        """Write an already formatted line, as `handle()` would (under the handler's lock)."""
        lock = self.lock  # acquire() and release(), without their two Python calls
        if lock is None:
            self._write(text, levelno)
            return
        lock.acquire()
        try:
            self._write(text, levelno)
        finally:
            lock.release()

    def _write(self, text: str, levelno: int) -> None:
        self.stream.write(text + self.terminator)
        now = time.monotonic()
        if levelno >= logging.WARNING or now - self._last_flush >= self.flush_interval:
            self._last_flush = now
            self.flush()
        elif self._timer is None:
            # An idle service must not keep its last lines in the buffer: flush soon.
            self._timer = threading.Timer(self.flush_interval, self._timed_flush)
            self._timer.daemon = True
            self._timer.start()

    def _timed_flush(self) -> None:
        self._timer = None
        self._last_flush = time.monotonic()
        with contextlib.suppress(Exception):
            self.flush()


def stdout_handler(settings: Settings, level: int, *, scrub: Scrub | None = None,
                   tenant: TenantForm | None = None) -> LazyFlushStreamHandler | None:
    """The stdout handler the settings ask for (JSON or text, scrubbed), or None for
    `log_format=none`. The caller attaches it to the root logger."""
    if settings.log_format == "none":
        return None
    handler = LazyFlushStreamHandler(sys.stdout, scrub=scrub)
    handler.setLevel(level)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(service=settings.service_name, environment=settings.environment,
                                           capture_user_id=settings.capture_user_id, scrub=scrub,
                                           tenant=tenant))
    else:
        handler.setFormatter(ScrubbingTextFormatter(TEXT_FORMAT, scrub=scrub))
    return handler
