"""The access line: one line per HTTP request on the `otel_crm.access` logger (method, path,
status, latency, the request's trace id and tenant), written by the WSGI/ASGI integrations.

    integration ─ AccessLine(method, path)     before the app runs; opens the request's span holder
                ─ .response_started(status)    in start_response / on http.response.start
                ─ .write()                     once, inside the request's tenant context
                ─ .close()                     in the context that opened it
    ServerSpanCapture.on_start                 the request's first SERVER span → the holder
                                               (registered by traces.create_tracer_provider)
    write ─ fast path: formatter.line() → our JSON stdout handler   (when nothing else listens)
          └ or access_log.info(..., extra=fields) → the ordinary logging path

The line is not exported over OTLP: it repeats what the server span already carries, so the OTLP
handler filters it out (`logs.py`); stdout, and any handler the host adds, get it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

from otel_crm._internal.request_span import server_spans
from otel_crm._internal.safety import guard
from otel_crm._internal.settings import Settings
from otel_crm._internal.stdout import JsonFormatter, LazyFlushStreamHandler

__all__ = ["ACCESS_LOGGER", "AccessLine", "ServerSpanCapture", "access_fast_path", "access_log",
           "install_access_line", "uninstall_access_line"]

ACCESS_LOGGER = "otel_crm.access"
access_log = logging.getLogger(ACCESS_LOGGER)  # getLogger() takes logging's module lock: once

# The request's server span holder (see request_span.py: stdout lines use it too).
_server_spans = server_spans


class ServerSpanCapture(SpanProcessor):
    """Hands the first SERVER span started during a request to that request's access line."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # Runs for every span: one ContextVar read, and `guard` only sees the (never expected)
        # exception.
        try:
            spans = _server_spans.get()
            if spans is not None and not spans and span.kind is SpanKind.SERVER:
                spans.append(span)
        except Exception:
            with guard("access_log"):
                raise

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class AccessLine:
    """One request's access line: opened before the app runs, told when the response starts,
    written once when the request is done. `close()` must run in the context that opened it
    (the integration's `finally`); `write()` may run later (a WSGI body iterated by the server)."""

    __slots__ = ("_method", "_path", "_span", "_spans", "_started", "_status", "_token")

    def __init__(self, method: str, path: str, status: int | str = 500) -> None:
        self._started = time.perf_counter()
        self._method = method
        self._path = path
        self._status: int | str = status  # what the app sent; parsed only in write(), under guard
        self._span: Any = None  # the current span at response start (INVALID_SPAN at worst)
        self._spans: list[Span] = []
        self._token = _server_spans.set(self._spans)

    @property
    def responded(self) -> bool:
        return self._span is not None

    def response_started(self, status: int | str) -> None:
        """Call from start_response / on `http.response.start`: the span current here is the
        server span for most frameworks."""
        self._status = status
        self._span = trace.get_current_span()

    def server_span_context(self) -> trace.SpanContext:
        """The request's server span (the first SERVER span started in it, else the span current
        at response start) for the `traceresponse` header: after `response_started`. The captured
        span comes first because the span current when an ASGI response starts may be the
        instrumentation's `http send` child."""
        spans = self._spans
        if spans:
            return spans[0].get_span_context()
        span = self._span
        return span.get_span_context() if span is not None else trace.INVALID_SPAN_CONTEXT

    def close(self) -> None:
        """Stop capturing server spans for this request (the holder keeps what it caught)."""
        _server_spans.reset(self._token)

    def write(self) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        try:  # once per request: `guard` only sees the (never expected) exception
            status = self._status
            code = status if isinstance(status, int) else int(str(status).split(" ", 1)[0])
            _log_access(self._method, self._path, code, self._started, self._server_span())
        except Exception:
            with guard("access_log"):
                raise

    def _server_span(self) -> Any:
        span = self._span
        if span is not None and span.get_span_context().is_valid:
            return span
        return self._spans[0] if self._spans else None


def _log_access(method: str, path: str, status: int, started: float, span: Any) -> None:
    # The caller (AccessLine.write) checked that the access logger is enabled for INFO.
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    fast = access_fast_path.writer()
    if fast is not None:  # the same line, minus a LogRecord and the handler dispatch
        stream, formatter = fast
        span_context = span.get_span_context() if span is not None else trace.INVALID_SPAN_CONTEXT
        if not span_context.is_valid:
            span_context = trace.get_current_span().get_span_context()
        try:
            if type(method) is str and type(path) is str and type(status) is int and math.isfinite(latency_ms):
                text = formatter.access_line(method, path, status, latency_ms, span_context=span_context)
            else:  # a str subclass, a bool status...: the general writer, which knows every type
                text = formatter.line(f"{method} {path} {status}", ACCESS_LOGGER, _fields(
                    method, path, status, latency_ms), span_context=span_context)
            stream.write_line(text)
            return
        except Exception:  # noqa: S110 - e.g. a closed stdout: the logging path reports it as logging does
            pass
    fields = _fields(method, path, status, latency_ms)
    if span is not None and span.get_span_context().is_valid:
        with trace.use_span(span, end_on_exit=False):
            access_log.info("%s %s %s", method, path, status, extra=fields)
    else:
        access_log.info("%s %s %s", method, path, status, extra=fields)


def _fields(method: str, path: str, status: int, latency_ms: float) -> dict[str, str | int | float]:
    return {"method": method, "path": path, "status_code": status, "latency_ms": latency_ms}


class _AccessFastPath:
    """Writes the access line straight to our JSON stdout handler when that is exactly what the
    logging path would do: every logger from the access logger up to the root has no handlers or
    filters but ours, and propagates; the root holds only otel_crm's handlers (the OTLP one skips
    the access line anyway). Anyone attaching a handler or filter anywhere on that path, or
    switching propagation off, gets the ordinary LogRecord path again, at once."""

    def __init__(self) -> None:
        self._root_handlers: list[logging.Handler] = []
        self._stream: LazyFlushStreamHandler | None = None
        self._formatter: JsonFormatter | None = None

    def enable(self, root: logging.Logger, ours: Sequence[logging.Handler], stream: LazyFlushStreamHandler,
               formatter: JsonFormatter) -> None:
        """`ours`: the handlers otel_crm put on `root`; any other one keeps the slow path."""
        if root is not logging.root or not all(h in ours for h in root.handlers):
            return  # someone else's handler (basicConfig, a file, Sentry) must keep seeing the line
        self._root_handlers = list(root.handlers)
        self._stream, self._formatter = stream, formatter

    def disable(self) -> None:
        self._stream = self._formatter = None

    def writer(self) -> tuple[LazyFlushStreamHandler, JsonFormatter] | None:
        stream, formatter = self._stream, self._formatter
        if stream is None or formatter is None:
            return None
        root = logging.root
        if (root.handlers != self._root_handlers or root.filters or stream.filters
                or stream.formatter is not formatter or stream.level > logging.INFO):
            return None
        logger: logging.Logger | None = access_log
        while logger is not None and logger is not root:
            if logger.handlers or logger.filters or not logger.propagate:
                return None
            logger = logger.parent
        return stream, formatter


access_fast_path = _AccessFastPath()


def install_access_line(settings: Settings, root: logging.Logger, ours: Sequence[logging.Handler],
                        stdout: logging.Handler | None) -> None:
    """After otel_crm's handlers (`ours`) joined `root`: take the fast path when the stdout handler
    writes JSON, and mute the access logger when the settings switch the line off."""
    if isinstance(stdout, LazyFlushStreamHandler) and isinstance(stdout.formatter, JsonFormatter):
        access_fast_path.enable(root, ours, stdout, stdout.formatter)
    if not settings.access_log:  # the request path then skips the access line entirely
        access_log.setLevel(logging.WARNING)


def uninstall_access_line() -> None:
    access_fast_path.disable()
