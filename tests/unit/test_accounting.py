"""The export ledger: produced = exported + dropped (by reason) + pending, per signal; settled at the end."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry._logs import LogRecord as ApiLogRecord
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_crm._internal import accounting, exit_drop, semconv
from otel_crm._internal.exporters import ForkSafeLogExporter, ForkSafeMetricExporter, ForkSafeSpanExporter
from otel_crm._internal.logs import CountingBatchLogRecordProcessor
from otel_crm._internal.safety import telemetry_dropped_counter
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.traces import CountingBatchSpanProcessor, create_tracer_provider
from otel_crm.testing import telemetry_accounting
from tests.support.metrics import collect


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[InMemoryMetricReader]:
    accounting.reset()
    reader = InMemoryMetricReader()
    accounting.set_counter(telemetry_dropped_counter(MeterProvider(metric_readers=[reader]).get_meter("t")))
    yield reader
    accounting.set_counter(None)
    accounting.reset()
    exit_drop.reset()


def dropped_by_reason(reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    metric = collect(reader).get(semconv.CRM_TELEMETRY_DROPPED)
    if metric is None:
        return {}
    return {(p.attributes[semconv.CRM_SIGNAL], p.attributes[semconv.CRM_DROP_REASON]): int(p.value)
            for p in metric.data.data_points}


class Scripted(SpanExporter):
    """Answers each export with the next scripted result (an exception is raised)."""

    def __init__(self, *results: Any) -> None:
        self.results = list(results)
        self.seen = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.seen += len(spans)
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result  # type: ignore[no-any-return]

    def shutdown(self) -> None:
        return None


def spans(count: int) -> list[ReadableSpan]:
    tracer = TracerProvider().get_tracer("t")
    out = []
    for i in range(count):
        span = tracer.start_span(f"s{i}")
        span.end()
        out.append(span)  # type: ignore[arg-type]
    return out


def test_every_export_outcome_is_exported_or_dropped_with_a_reason(_fresh: InMemoryMetricReader,
                                                                   no_reraise: None) -> None:
    inner = Scripted(SpanExportResult.SUCCESS, SpanExportResult.FAILURE, TimeoutError("deadline"))
    exporter = ForkSafeSpanExporter(lambda: inner)
    accounting.produce("traces", 10)  # what a queue guard would have counted
    assert exporter.export(spans(5)) is SpanExportResult.SUCCESS
    assert exporter.export(spans(3)) is SpanExportResult.FAILURE  # after the exporter's own retries
    assert exporter.export(spans(2)) is SpanExportResult.FAILURE  # raised: caught, reported, counted
    tally = accounting.snapshot()["traces"]
    assert (tally.produced, tally.exported, tally.pending) == (10, 5, 0)
    assert tally.dropped == {"export_failed": 3, "export_error": 2}
    assert dropped_by_reason(_fresh) == {("traces", "export_failed"): 3, ("traces", "export_error"): 2}


def test_an_exporter_exception_is_reported_as_an_internal_error_not_raised(no_reraise: None,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    exporter = ForkSafeSpanExporter(lambda: Scripted(RuntimeError("boom"), RuntimeError("boom")))
    assert exporter.export(spans(1)) is SpanExportResult.FAILURE
    assert exporter.export(spans(1)) is SpanExportResult.FAILURE
    lines = [r for r in caplog.records if "traces exporter" in r.getMessage()]
    assert len(lines) == 1  # reported once


def test_failed_metric_exports_count_their_data_points(_fresh: InMemoryMetricReader) -> None:
    provider_reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[provider_reader]).get_meter("m")
    meter.create_counter("a").add(1, {"k": "1"})
    meter.create_counter("a2").add(1, {"k": "2"})
    data = provider_reader.get_metrics_data()
    assert data is not None

    class Failing:
        _preferred_temporality: dict[type, Any] = {}
        _preferred_aggregation: dict[type, Any] = {}

        def __init__(self) -> None:
            self.results = [MetricExportResult.SUCCESS, MetricExportResult.FAILURE]

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
            return self.results.pop(0)

        def shutdown(self, **kwargs: Any) -> None:
            return None

    exporter = ForkSafeMetricExporter(Failing)  # type: ignore[arg-type]
    exporter.export(data)
    exporter.export(data)
    tally = accounting.snapshot()["metrics"]
    assert (tally.produced, tally.exported, tally.dropped) == (4, 2, {"export_failed": 2})
    assert dropped_by_reason(_fresh) == {("metrics", "export_failed"): 2}


def test_the_queue_guard_counts_what_it_is_offered_and_the_batch_processor_balances() -> None:
    inner = Scripted(*([SpanExportResult.SUCCESS] * 3 + [SpanExportResult.FAILURE] * 10))
    processor = CountingBatchSpanProcessor(ForkSafeSpanExporter(lambda: inner), max_queue_size=10_000,
                                           max_export_batch_size=10, schedule_delay_millis=60_000)
    provider = create_tracer_provider(resolve_settings({}, sampling_mode="off"), Resource({}), downstream=processor)
    tracer = provider.get_tracer("t")
    for i in range(45):
        tracer.start_span(f"s{i}").end()
    assert accounting.snapshot()["traces"].produced == 45
    provider.force_flush()
    tally = accounting.snapshot()["traces"]
    assert (tally.exported, tally.dropped, tally.pending) == (30, {"export_failed": 15}, 0)
    provider.shutdown()


def test_what_is_still_queued_at_the_end_is_counted_as_shutdown(_fresh: InMemoryMetricReader) -> None:
    release = threading.Event()

    class Stuck(LogRecordExporter):
        def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
            release.wait(5)
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(CountingBatchLogRecordProcessor(
        ForkSafeLogExporter(Stuck), max_queue_size=100, max_export_batch_size=5, schedule_delay_millis=60_000))
    logger = provider.get_logger("t")
    for i in range(20):
        logger.emit(ApiLogRecord(body=f"record {i}"))
    assert accounting.snapshot()["logs"].pending == 20
    assert accounting.settle(["logs"]) == {"logs": 20}  # the deadline passed with all of them unsent
    release.set()
    provider.shutdown()  # the abandoned exports answer late: nothing is counted twice
    logger.emit(ApiLogRecord(body="after the end"))  # the processor is shut down: lost, counted
    tally = accounting.snapshot()["logs"]
    assert (tally.produced, tally.exported, tally.dropped, tally.pending) == (21, 0, {"shutdown": 21}, 0)
    assert dropped_by_reason(_fresh) == {("logs", "shutdown"): 20}
    assert accounting.settle(["logs"]) == {}  # once


def test_a_log_record_the_scrubber_refused_is_produced_and_dropped() -> None:
    accounting.drop("logs", "scrub_error", 1, count=False, entered=True)
    accounting.drop("traces", "scrub_error", 1, count=False)  # a span was produced when queued
    snapshot = accounting.snapshot()
    assert (snapshot["logs"].produced, snapshot["logs"].pending) == (1, 0)
    assert (snapshot["traces"].produced, snapshot["traces"].pending) == (0, -1)


def test_the_testing_helper_reads_the_ledger() -> None:
    accounting.produce("metrics", 3)
    accounting.exported("metrics", 2)
    accounting.drop("metrics", "shutdown", 1)
    assert telemetry_accounting()["metrics"] == {"produced": 3, "exported": 2, "dropped": {"shutdown": 1},
                                                 "pending": 0}
    assert set(telemetry_accounting()) == set(accounting.SIGNALS)


def test_a_forked_child_starts_from_zero() -> None:
    accounting.produce("traces", 4)
    accounting._after_fork_in_child()
    assert accounting.snapshot()["traces"].produced == 0
