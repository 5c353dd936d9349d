from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.traces import CountingBatchSpanProcessor, create_tracer_provider


def dropped_points(reader: InMemoryMetricReader) -> list:  # type: ignore[type-arg]
    """The `crm.telemetry.dropped` points the reader has seen."""
    data = reader.get_metrics_data()
    return [] if data is None else [
        p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        if m.name == "crm.telemetry.dropped" for p in m.data.data_points]


class BlockedExporter(SpanExporter):
    """Stands for a collector that stopped answering."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(5)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def test_full_export_queue_drops_and_counts_without_blocking() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    exporter = BlockedExporter()
    processor = CountingBatchSpanProcessor(exporter, meter=meter, max_queue_size=10,
                                           max_export_batch_size=5, schedule_delay_millis=60_000)
    settings = resolve_settings({}, sampling_mode="off")
    provider = create_tracer_provider(settings, Resource({}), downstream=processor)
    tracer = provider.get_tracer("t")
    for i in range(200):
        tracer.start_span(f"s{i}").end()
    dropped = dropped_points(reader)
    assert dropped and dropped[0].attributes == {"crm.signal": "traces", "crm.drop.reason": "queue_full"}
    # the worker holds one batch of 5 while blocked; the queue keeps at most 10
    assert 200 - 15 <= dropped[0].value <= 200 - 10
    exporter.release.set()
    provider.shutdown()


def test_no_exporter_configured_means_no_export_chain() -> None:
    settings = resolve_settings({}, traces_exporter=["none"], sampling_mode="off")
    provider = create_tracer_provider(settings, Resource({}))
    names = [type(p).__name__ for p in provider._active_span_processor._span_processors]
    assert names == ["TenantSpanProcessor", "ServerSpanCapture"]


def test_every_item_is_queued_or_counted_when_threads_race_for_the_last_slots() -> None:
    import collections
    import time
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from otel_crm._internal.exporters import QueueGuard

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    queue: collections.deque[int] = collections.deque(maxlen=50)  # the SDK's queue: drops silently
    guard = QueueGuard(SimpleNamespace(_batch_processor=SimpleNamespace(_queue=queue, _max_queue_size=50)),
                       "traces", meter)

    def enqueue(item: int) -> None:
        time.sleep(0)  # the SDK does work between our check and its append: let another thread in
        queue.appendleft(item)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda worker: [guard.offer(worker, enqueue) for _ in range(200)], range(8)))
    dropped = sum(p.value for p in dropped_points(reader))
    assert len(queue) == 50 and dropped == 8 * 200 - 50, "every item is queued or counted"


def test_head_mode_does_not_count_unsampled_spans_as_dropped() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    exporter = BlockedExporter()
    processor = CountingBatchSpanProcessor(exporter, meter=meter, max_queue_size=5,
                                           max_export_batch_size=5, schedule_delay_millis=60_000)
    def dropped() -> float:
        return sum(p.value for p in dropped_points(reader))

    always_on = create_tracer_provider(resolve_settings({}, sampling_mode="off"), Resource({}),
                                       downstream=processor)
    for _ in range(30):  # a collector outage: the queue is full
        always_on.get_tracer("t").start_span("sampled").end()
    full = dropped()
    assert full >= 20
    head = create_tracer_provider(resolve_settings({}, sampling_mode="head", sampling_ratio=0.0), Resource({}),
                                  downstream=processor)
    for _ in range(50):  # recorded (for RED), never meant for export
        head.get_tracer("t").start_span("GET /ok", kind=trace.SpanKind.SERVER).end()
    assert dropped() == full, "spans that were never going to be exported are not 'dropped'"
    exporter.release.set()
    always_on.shutdown()
    head.shutdown()
