"""Logs: stdlib logging → OTLP log records (with tenant and trace ids) and JSON lines on stdout.

Handlers are added to the root logger once (marked, so a second configure() or a reload adds
none), and `logging.basicConfig()` is never called: the host app owns its logging setup.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter
from opentelemetry.sdk.resources import Resource

from otel_crm._internal import semconv
from otel_crm._internal.exporters import QueueGuard, otlp_exporter
from otel_crm._internal.jsonlog import ACCESS_LOGGER, JsonFormatter
from otel_crm._internal.scrub_pipeline import ScrubbingLogProcessor
from otel_crm._internal.settings import Settings
from otel_crm._internal.tenancy import current_tenant

__all__ = ["TenantLogProcessor", "access_fast_path", "create_logger_provider", "install_log_handlers",
           "remove_log_handlers"]

_MARK = "_otel_crm_handler"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class TenantLogProcessor(LogRecordProcessor):
    """Adds crm.tenant.id (and user.id when allowed) to records emitted inside a tenant context.

    on_emit runs on the emitting thread, so the current context is the request's.
    """

    def __init__(self, *, capture_user_id: bool = False):
        self._capture_user_id = capture_user_id

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        tenant = current_tenant()
        if tenant is None:
            return
        attributes = log_record.log_record.attributes
        if attributes is None:
            return
        attributes[semconv.CRM_TENANT_ID] = tenant.id  # type: ignore[index]
        if self._capture_user_id and tenant.user_id:
            attributes[semconv.USER_ID] = tenant.user_id  # type: ignore[index]

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_PRIMITIVES = (str, bool, int, float, bytes)


def _plain(value: Any) -> bool:
    if isinstance(value, _PRIMITIVES):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(item, _PRIMITIVES) for item in value)


def _otlp_handler(level: int, logger_provider: LoggerProvider) -> logging.Handler:
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    class CrmLoggingHandler(LoggingHandler):
        """Keeps only attribute values OTLP can carry: frameworks attach objects to records
        (Django's `request`), which the SDK would reject with a warning on every error log."""

        def _get_attributes(self, record: logging.LogRecord) -> Any:
            attributes, event_name = super()._get_attributes(record)
            return {k: v for k, v in attributes.items() if _plain(v)}, event_name

    handler = CrmLoggingHandler(level=level, logger_provider=logger_provider)
    handler.addFilter(_not_access_log)
    return handler


def _not_access_log(record: logging.LogRecord) -> bool:
    # The access line repeats what the server span already carries (method, route, status,
    # duration, trace id): it goes to stdout for grep-ability, not a second time over OTLP.
    return record.name != ACCESS_LOGGER


class _ScrubbingFormatter(logging.Formatter):
    """The text format, scrubbed like the JSON one: nothing leaves the process unscrubbed."""

    def __init__(self, fmt: str, *, scrub: Any = None):
        super().__init__(fmt)
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return self._scrub(text) if self._scrub is not None else text


class LazyFlushStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stdout handler that does not flush after every line (a syscall per log record on the
    request path): it flushes warnings and errors at once, anything else at most every 0.5 s,
    and everything at exit (logging.shutdown calls flush())."""

    flush_interval = 0.5

    def __init__(self, stream: Any = None):
        super().__init__(stream)
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
        self.acquire()
        try:
            self._write(text, levelno)
        finally:
            self.release()

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


class CountingBatchLogRecordProcessor(BatchLogRecordProcessor):
    """A BatchLogRecordProcessor that drops and counts instead of logging per record when full."""

    def __init__(self, exporter: Any, *, meter: Any = None, **kwargs: Any):
        super().__init__(exporter, **kwargs)
        self._guard = QueueGuard(self, "logs", meter)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self._guard.offer(log_record, super().on_emit)


def create_logger_provider(settings: Settings, resource: Resource, *, scrubber: Any = None,
                           downstream: LogRecordProcessor | None = None, meter: Any = None) -> LoggerProvider:
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    # Processors run in order: tenant first, then scrubbing (mutates), then export.
    provider.add_log_record_processor(TenantLogProcessor(capture_user_id=settings.capture_user_id))
    exporters: list[LogRecordProcessor] = []
    if downstream is not None:
        exporters.append(downstream)
    else:
        if "otlp" in settings.logs_exporter:
            exporters.append(CountingBatchLogRecordProcessor(
                otlp_exporter(settings, "logs"), meter=meter, export_timeout_millis=settings.otlp_timeout_ms))
        if "console" in settings.logs_exporter:
            exporters.append(BatchLogRecordProcessor(ConsoleLogRecordExporter()))
    for exporting in exporters:
        if scrubber is not None:
            provider.add_log_record_processor(ScrubbingLogProcessor(exporting, scrubber))
        else:
            provider.add_log_record_processor(exporting)
    return provider


def install_log_handlers(settings: Settings, logger_provider: LoggerProvider | None,
                         *, scrubber: Any = None, root: logging.Logger | None = None) -> list[logging.Handler]:
    """Attach otel_crm's handlers to the root logger, unless they are already there."""
    root = root or logging.getLogger()
    if any(getattr(h, _MARK, False) for h in root.handlers):
        return []
    level = _LEVELS[settings.log_level]
    added: list[logging.Handler] = []
    if logger_provider is not None and settings.logs_exporter != ("none",):
        added.append(_otlp_handler(level, logger_provider))
    if settings.log_format != "none":
        stream = LazyFlushStreamHandler(sys.stdout)
        stream.setLevel(level)
        if settings.log_format == "json":
            stream.setFormatter(JsonFormatter(
                service=settings.service_name, environment=settings.environment,
                capture_user_id=settings.capture_user_id,
                scrub=scrubber.scrub_text if scrubber is not None else None))
        else:
            stream.setFormatter(_ScrubbingFormatter(
                "%(asctime)s %(levelname)s [%(name)s] %(message)s",
                scrub=scrubber.scrub_text if scrubber is not None else None))
        added.append(stream)
    for handler in added:
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    json_stream = next((h for h in added if isinstance(h, LazyFlushStreamHandler)), None)
    if json_stream is not None and isinstance(json_stream.formatter, JsonFormatter):
        access_fast_path.enable(root, json_stream, json_stream.formatter)
    if not settings.access_log:  # the request path then skips the access line entirely
        logging.getLogger("otel_crm.access").setLevel(logging.WARNING)
    # Python's root logger defaults to WARNING; lower it only if nobody has touched it.
    if added and root.level == logging.WARNING and level < logging.WARNING:
        root.setLevel(level)
    # Our own chatter and the exporters' must never loop back into export.
    logging.getLogger("otel_crm").propagate = True
    return added


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

    def enable(self, root: logging.Logger, stream: LazyFlushStreamHandler, formatter: JsonFormatter) -> None:
        if root is not logging.root or not all(getattr(h, _MARK, False) for h in root.handlers):
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
        logger: logging.Logger | None = _access_logger
        while logger is not None and logger is not root:
            if logger.handlers or logger.filters or not logger.propagate:
                return None
            logger = logger.parent
        return stream, formatter


access_fast_path = _AccessFastPath()
_access_logger = logging.getLogger(ACCESS_LOGGER)  # getLogger() takes logging's module lock: once


def remove_log_handlers(root: logging.Logger | None = None) -> None:
    access_fast_path.disable()
    root = root or logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _MARK, False):
            root.removeHandler(handler)
