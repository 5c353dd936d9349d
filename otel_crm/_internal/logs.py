"""Logs: stdlib logging → OTLP log records (with tenant and trace ids), and the root handlers.

    root logger ─ CrmLoggingHandler → LoggerProvider: TenantLogProcessor → [ScrubbingLogProcessor →]
                │                      CountingBatchLogRecordProcessor → OTLP
                └ the stdout handler (JSON or text lines: `stdout.py`; the access line: `access.py`)

Handlers are added to the root logger once (marked, so a second configure() or a reload adds
none), and `logging.basicConfig()` is never called: the host app owns its logging setup.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter
from opentelemetry.sdk.resources import Resource

from otel_crm._internal import semconv
from otel_crm._internal.access import ACCESS_LOGGER, install_access_line, uninstall_access_line
from otel_crm._internal.basic_config import install_basic_config_hook, uninstall_basic_config_hook
from otel_crm._internal.exporters import QueueGuard, otlp_exporter
from otel_crm._internal.framework_logs import mute_server_request_lines, unmute_server_request_lines
from otel_crm._internal.runtime import current_runtime
from otel_crm._internal.scrub_pipeline import ScrubbingLogProcessor
from otel_crm._internal.settings import Settings
from otel_crm._internal.stdout import stdout_handler
from otel_crm._internal.tenancy import TenantForm, current_tenant, tenant_form

__all__ = ["LOCAL_ONLY", "CountingBatchLogRecordProcessor", "TenantLogProcessor", "create_logger_provider",
           "install_log_handlers", "remove_log_handlers"]

_MARK = "_otel_crm_handler"
# A record carrying this attribute (`extra={LOCAL_ONLY: True}`) is not exported over OTLP: the
# exit line, written after the logs pipeline shut down.
LOCAL_ONLY = "otel_crm_local_only"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class TenantLogProcessor(LogRecordProcessor):
    """Adds crm.tenant.id (and user.id when allowed) to records emitted inside a tenant context,
    and crm.trace.sampled to records of a trace whose final sampling decision is known.

    on_emit runs on the emitting thread, so the current context is the request's.
    """

    def __init__(self, *, capture_user_id: bool = False, form: TenantForm | None = None):
        self._capture_user_id = capture_user_id
        self._form = form or tenant_form(None)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        attributes = record.attributes
        if attributes is None:
            return
        trace_id = record.trace_id
        if trace_id:  # the trace's final decision, only once known (never a guess while undecided)
            sampled = current_runtime().trace_sampled(trace_id, bool((record.trace_flags or 0) & 1))
            if sampled is not None:
                attributes[semconv.CRM_TRACE_SAMPLED] = sampled  # type: ignore[index]
        tenant = current_tenant()
        if tenant is None:
            return
        attributes[semconv.CRM_TENANT_ID] = self._form(tenant.id)  # type: ignore[index]
        if self._capture_user_id and tenant.user_id:
            attributes[semconv.USER_ID] = self._form(tenant.user_id, semconv.USER_ID)  # type: ignore[index]

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
    return record.name != ACCESS_LOGGER and not getattr(record, LOCAL_ONLY, False)


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
    provider.add_log_record_processor(TenantLogProcessor(capture_user_id=settings.capture_user_id,
                                                         form=tenant_form(scrubber)))
    exporters: list[LogRecordProcessor] = []
    if downstream is not None:
        exporters.append(downstream)
    else:
        if "otlp" in settings.logs_exporter:
            exporters.append(CountingBatchLogRecordProcessor(
                otlp_exporter(settings, "logs"), meter=meter, export_timeout_millis=settings.otlp_timeout_ms,
                # Validated values, passed explicitly: the SDK refuses a batch above the queue size.
                schedule_delay_millis=settings.blrp_schedule_delay_ms, max_queue_size=settings.blrp_max_queue_size,
                max_export_batch_size=min(settings.blrp_max_export_batch_size, settings.blrp_max_queue_size)))
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
    """Attach otel_crm's handlers (OTLP, stdout) to the root logger, unless they are already there."""
    root = root or logging.getLogger()
    if any(getattr(h, _MARK, False) for h in root.handlers):
        return []
    level = _LEVELS[settings.log_level]
    added: list[logging.Handler] = []
    if logger_provider is not None and settings.logs_exporter != ("none",):
        added.append(_otlp_handler(level, logger_provider))
    stdout = stdout_handler(settings, level, scrub=scrubber.scrub_text if scrubber is not None else None,
                            tenant=tenant_form(scrubber))
    if stdout is not None:
        added.append(stdout)
    for handler in added:
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    install_access_line(settings, root, added, stdout)
    if stdout is not None and settings.access_log:  # ours replaces the dev servers' request line
        mute_server_request_lines()
    if stdout is not None:  # the app's basicConfig() would otherwise do nothing
        install_basic_config_hook(stdout, added)
    # Python's root logger defaults to WARNING; lower it only if nobody has touched it.
    if added and root.level == logging.WARNING and level < logging.WARNING:
        root.setLevel(level)
    # otel_crm's own warnings go through the root logger's handlers, even where the host's
    # logging config switched propagation off for it.
    logging.getLogger("otel_crm").propagate = True
    return added


def remove_log_handlers(root: logging.Logger | None = None) -> None:
    uninstall_access_line()
    unmute_server_request_lines()
    uninstall_basic_config_hook()
    root = root or logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _MARK, False):
            root.removeHandler(handler)
