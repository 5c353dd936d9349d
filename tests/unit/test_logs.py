"""The OTLP log pipeline (tenant and trace ids on records, a full queue drops and counts) and the
root handlers (added once, never basicConfig)."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace

import otel_crm
from otel_crm._internal.logs import install_log_handlers, remove_log_handlers
from otel_crm._internal.settings import resolve_settings
from otel_crm.testing import CapturedTelemetry


def test_handlers_are_added_once_and_basic_config_is_never_called(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging, "basicConfig", lambda **_: pytest.fail("basicConfig called"))
    root = logging.Logger("isolated-root")
    settings = resolve_settings({}, logs_exporter=["none"], log_format="json")
    first = install_log_handlers(settings, None, root=root)
    second = install_log_handlers(settings, None, root=root)
    assert len(first) == 1 and second == [] and len(root.handlers) == 1
    remove_log_handlers(root)
    assert root.handlers == []


def test_log_format_none_adds_no_stdout_handler() -> None:
    root = logging.Logger("isolated-root-2")
    settings = resolve_settings({}, logs_exporter=["none"], log_format="none")
    assert install_log_handlers(settings, None, root=root) == []


def test_otlp_log_records_carry_tenant_and_trace(otel_crm_telemetry: CapturedTelemetry) -> None:
    tracer = otel_crm_telemetry.runtime.tracer()
    with otel_crm.tenant_context("globex"), tracer.start_as_current_span("req") as span:
        logging.getLogger("crm").warning("quota almost used")
    record = next(r for r in otel_crm_telemetry.logs() if r.log_record.body == "quota almost used")
    assert record.log_record.attributes["crm.tenant.id"] == "globex"
    assert record.log_record.trace_id == span.get_span_context().trace_id
    assert "user.id" not in record.log_record.attributes
    assert trace.get_current_span() is not span


def test_a_full_log_queue_drops_and_counts() -> None:
    import threading
    from collections.abc import Sequence

    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from otel_crm._internal.logs import CountingBatchLogRecordProcessor

    class Stuck(LogRecordExporter):
        release = threading.Event()

        def export(self, batch: Sequence) -> LogRecordExportResult:  # type: ignore[type-arg]
            self.release.wait(5)
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            self.release.set()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    exporter = Stuck()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(CountingBatchLogRecordProcessor(
        exporter, meter=meter, max_queue_size=10, max_export_batch_size=5, schedule_delay_millis=60_000))
    otel_logger = provider.get_logger("t")
    from opentelemetry._logs import LogRecord as ApiLogRecord

    for i in range(100):
        otel_logger.emit(ApiLogRecord(body=f"record {i}"))
    data = reader.get_metrics_data()
    dropped = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
               if m.name == "crm.telemetry.dropped" for p in m.data.data_points]
    exporter.release.set()
    provider.shutdown()
    assert dropped and dropped[0].attributes == {"crm.signal": "logs", "crm.drop.reason": "queue_full"}
    assert 100 - 15 <= dropped[0].value <= 100 - 10


def test_log_batch_settings_are_passed_validated_and_the_batch_capped_at_the_queue(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter
    from opentelemetry.sdk.resources import Resource

    from otel_crm._internal.logs import create_logger_provider

    # What upstream does with the same values read from the environment: it refuses them.
    monkeypatch.setenv("OTEL_BLRP_MAX_QUEUE_SIZE", "100")
    monkeypatch.setenv("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "512")
    with pytest.raises(ValueError):
        BatchLogRecordProcessor(InMemoryLogRecordExporter())  # type: ignore[no-untyped-call]
    settings = resolve_settings(logs_exporter=["otlp"], otlp_endpoint="http://127.0.0.1:9")
    assert (settings.blrp_max_queue_size, settings.blrp_max_export_batch_size) == (100, 512)
    provider = create_logger_provider(settings, Resource({}))  # ours passes the batch capped at 100
    provider.shutdown()
