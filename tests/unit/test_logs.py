from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import otel_crm
from otel_crm._internal.jsonlog import JsonFormatter
from otel_crm._internal.logs import install_log_handlers, remove_log_handlers
from otel_crm._internal.settings import resolve_settings
from otel_crm.testing import CapturedTelemetry


def _formatted(logger: logging.Logger, formatter: JsonFormatter, emit) -> dict:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        emit()
    finally:
        logger.removeHandler(handler)
    return json.loads(stream.getvalue().strip().splitlines()[-1])


def test_json_line_has_the_fields_ops_search_by() -> None:
    logger = logging.getLogger("test.json")
    formatter = JsonFormatter(service="crm", environment="prod", capture_user_id=False)
    tracer = TracerProvider().get_tracer("t")
    with otel_crm.tenant_context("acme", user_id="u-1"), tracer.start_as_current_span("req") as span:
        line = _formatted(logger, formatter, lambda: logger.info("hello %s", "world"))
    assert line["message"] == "hello world" and line["level"] == "info" and line["logger"] == "test.json"
    assert line["service"] == "crm" and line["environment"] == "prod"
    assert line["correlation_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")
    assert line["tenant_id"] == "acme" and "user_id" not in line
    assert line["timestamp"][-1] == "Z" and line["timestamp"][19] == "." and len(line["timestamp"]) == 24


def test_user_id_only_when_enabled_and_exception_fields() -> None:
    logger = logging.getLogger("test.json2")
    formatter = JsonFormatter(service="crm", environment="prod", capture_user_id=True,
                              scrub=lambda text: text.replace("s3cret", "[REDACTED]"))

    def fail() -> None:
        try:
            raise KeyError("s3cret")
        except KeyError:
            logger.exception("import failed")

    with otel_crm.tenant_context("acme", user_id="u-1"):
        line = _formatted(logger, formatter, fail)
    assert line["user_id"] == "u-1"
    assert line["exception_type"] == "KeyError" and "[REDACTED]" in line["exception_message"]
    assert "s3cret" not in json.dumps(line) and "Traceback" in line["stack_trace"]


def test_access_fields_are_copied() -> None:
    logger = logging.getLogger("test.access")
    formatter = JsonFormatter(service="crm", environment="prod")
    line = _formatted(logger, formatter, lambda: logger.info(
        "GET /leads 200", extra={"method": "GET", "path": "/leads", "status_code": 200, "latency_ms": 1.5}))
    assert (line["method"], line["path"], line["status_code"], line["latency_ms"]) == ("GET", "/leads", 200, 1.5)


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


def test_access_log_can_be_switched_off() -> None:
    access = logging.getLogger("otel_crm.access")
    before = access.level
    try:
        settings = resolve_settings({}, logs_exporter=["none"], log_format="json", access_log=False)
        install_log_handlers(settings, None, root=logging.Logger("isolated-root-3"))
        assert not access.isEnabledFor(logging.INFO)
    finally:
        access.setLevel(before)


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


def test_the_access_fast_path_writes_exactly_the_logging_paths_line() -> None:
    from otel_crm._internal.scrubbing import Scrubber

    scrubber = Scrubber.from_settings(resolve_settings({}))
    formatter = JsonFormatter(service="crm", environment="production", scrub=scrubber.scrub_text)
    span = TracerProvider().get_tracer("t").start_span("GET /leads")
    path = "/leads/export?email=jane@example.com"
    with otel_crm.tenant_context("acme"), trace.use_span(span, end_on_exit=True):
        record = logging.LogRecord("otel_crm.access", logging.INFO, __file__, 1, "%s %s %s",
                                   ("GET", path, 200), None)
        record.__dict__.update(method="GET", path=path, status_code=200, latency_ms=1.25)
        slow = formatter.format(record)
        fast = formatter.access_line("GET", path, 200, 1.25, span_context=span.get_span_context(),
                                    created=record.created)
    assert fast == slow
    line = json.loads(fast)
    assert line["tenant_id"] == "acme" and "jane@example.com" not in fast, "tenant kept, email scrubbed"


def test_the_access_fast_path_steps_aside_for_anything_else_that_listens() -> None:
    from otel_crm._internal.logs import _MARK, LazyFlushStreamHandler, access_fast_path

    root = logging.getLogger()
    saved = list(root.handlers)
    stream = LazyFlushStreamHandler(io.StringIO())
    formatter = JsonFormatter(service="crm", environment="production")
    stream.setFormatter(formatter)
    setattr(stream, _MARK, True)
    access, ours = logging.getLogger("otel_crm.access"), logging.getLogger("otel_crm")
    users = logging.StreamHandler(io.StringIO())
    try:
        root.handlers = [users, stream]  # e.g. logging.basicConfig() before otel_crm started
        access_fast_path.enable(root, stream, formatter)
        assert access_fast_path.writer() is None, "a handler that was there first keeps its lines"
        root.handlers = [stream]
        access_fast_path.enable(root, stream, formatter)
        assert access_fast_path.writer() == (stream, formatter)
        for listening in (root, ours, access):
            listening.addHandler(users)
            assert access_fast_path.writer() is None, f"a handler on {listening.name!r} sees the line"
            listening.removeHandler(users)
            listening.addFilter(lambda record: True)
            assert access_fast_path.writer() is None, f"a filter on {listening.name!r} sees the line"
            listening.filters.clear()
        ours.propagate = False
        assert access_fast_path.writer() is None, "propagation off: the logging path writes nothing"
        ours.propagate = True
        assert access_fast_path.writer() == (stream, formatter)
    finally:
        ours.propagate = True
        access_fast_path.disable()
        root.handlers = saved
