from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased

from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.traces import CountingBatchSpanProcessor, create_tracer_provider, head_sampler


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


def test_head_mode_uses_parent_based_ratio() -> None:
    assert isinstance(head_sampler(resolve_settings({}, sampling_mode="head")), ParentBased)
    assert head_sampler(resolve_settings({}, sampling_mode="collector")).get_description() == "AlwaysOnSampler"


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
    data = reader.get_metrics_data()
    dropped = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
               if m.name == "crm.telemetry.dropped" for p in m.data.data_points]
    assert dropped and dropped[0].attributes == {"crm.signal": "traces", "crm.drop.reason": "queue_full"}
    # the worker holds one batch of 5 while blocked; the queue keeps at most 10
    assert 200 - 15 <= dropped[0].value <= 200 - 10
    exporter.release.set()
    provider.shutdown()


def test_no_exporter_configured_means_no_export_chain() -> None:
    settings = resolve_settings({}, traces_exporter=["none"], sampling_mode="off")
    provider = create_tracer_provider(settings, Resource({}))
    names = [type(p).__name__ for p in provider._active_span_processor._span_processors]
    assert names == ["TenantSpanProcessor"]
