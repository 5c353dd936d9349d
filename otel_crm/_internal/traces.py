"""Traces: tenant attribution on start, RED metrics and tail sampling on end, then batch export.

    span start ─ TenantSpanProcessor (crm.tenant.id from context)
    span end ─┬─ RedMetricsProcessor (100% of entry spans, before sampling)
              └─ TailSamplingProcessor ─ kept spans ─ CountingBatchSpanProcessor
                                                         └─ ScrubbingSpanExporter ─ OTLP (export thread)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import Meter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    ReadableSpan,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.util.types import Attributes

from otel_crm._internal.access import ServerSpanCapture
from otel_crm._internal.exporters import QueueGuard, otlp_exporter
from otel_crm._internal.red import RedMetricsProcessor
from otel_crm._internal.sampling import SamplingPolicy, TailSamplingProcessor
from otel_crm._internal.scrub_pipeline import ScrubbingSpanExporter
from otel_crm._internal.scrubbing import Scrubber
from otel_crm._internal.settings import Settings
from otel_crm._internal.tenancy import TenantSpanProcessor

__all__ = ["CountingBatchSpanProcessor", "EntryRecordingHeadSampler", "create_tracer_provider", "head_sampler"]


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that drops and counts instead of logging per span when full."""

    def __init__(self, exporter: SpanExporter, *, meter: Meter | None = None, **kwargs: Any):
        super().__init__(exporter, **kwargs)
        self._guard = QueueGuard(self, "traces", meter)

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:  # recorded only (head mode): never exported
            return
        self._guard.offer(span, super().on_end)


class EntryRecordingHeadSampler(Sampler):
    """`ParentBased(TraceIdRatioBased(ratio))`, except that an unsampled *entry* span (no parent,
    or a remote one) is still recorded, never exported.

    RED metrics are computed from entry spans when they end, and the SDK ends only recorded
    spans: without this, head mode would count 10% of requests. Children of an unsampled entry
    span are dropped as usual, so the extra cost is one unexported span per request.
    """

    def __init__(self, ratio: float):
        self._ratio = ratio
        self._parent_based = ParentBased(TraceIdRatioBased(ratio))

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,  # noqa: PLR0917 - the SDK signature
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state: Any = None) -> SamplingResult:
        result = self._parent_based.should_sample(parent_context, trace_id, name, kind, attributes,
                                                  links, trace_state)
        if result.decision is Decision.DROP:
            parent = get_current_span(parent_context).get_span_context()
            if not parent.is_valid or parent.is_remote:
                # A DROP result carries no attributes; the recorded span needs the caller's.
                return SamplingResult(Decision.RECORD_ONLY, attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"EntryRecordingHeadSampler{{{self._ratio}}}"


def head_sampler(settings: Settings) -> Sampler:
    if settings.sampling_mode == "head":
        return EntryRecordingHeadSampler(settings.sampling_ratio)
    return ALWAYS_ON


def _export_chain(settings: Settings, meter: Meter | None, scrubber: Scrubber | None,
                  exporter: SpanExporter | None) -> SpanProcessor | None:
    # (exporter, batched): `exporter` (otel_crm.testing's) replaces the configured ones.
    targets: list[tuple[SpanExporter, bool]] = []
    if exporter is not None:
        targets.append((exporter, False))
    else:
        if "otlp" in settings.traces_exporter:
            targets.append((otlp_exporter(settings, "traces"), True))
        if "console" in settings.traces_exporter or settings.console_export:
            targets.append((ConsoleSpanExporter(), False))
    processors: list[SpanProcessor] = []
    for target, batched in targets:
        # The one place spans meet the scrubber (on the export thread).
        scrubbed = ScrubbingSpanExporter(target, scrubber) if scrubber is not None else target
        processors.append(CountingBatchSpanProcessor(
            scrubbed, meter=meter,
            max_queue_size=settings.bsp_max_queue_size,
            schedule_delay_millis=settings.bsp_schedule_delay_ms,
            max_export_batch_size=min(settings.bsp_max_export_batch_size, settings.bsp_max_queue_size),
            export_timeout_millis=settings.otlp_timeout_ms) if batched else SimpleSpanProcessor(scrubbed))
    if not processors:
        return None
    if len(processors) == 1:
        return processors[0]
    fanout = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
    for processor in processors:
        fanout.add_span_processor(processor)
    return fanout


def sampling_processor(settings: Settings, downstream: SpanProcessor, meter: Meter | None) -> SpanProcessor:
    """Put the in-process tail sampler in front of `downstream` when the mode asks for it."""
    if settings.sampling_mode != "tail":
        return downstream
    policy = SamplingPolicy(ratio=settings.sampling_ratio, slow_seconds=settings.sampling_slow_seconds,
                            keep_all=settings.profile == "development")
    return TailSamplingProcessor(
        downstream, policy,
        max_traces=settings.sampling_max_traces,
        max_spans_per_trace=settings.sampling_max_spans_per_trace,
        max_spans=settings.sampling_max_spans,
        max_trace_age_s=settings.sampling_max_trace_age_seconds,
        meter=meter)


def create_tracer_provider(settings: Settings, resource: Resource, *, meter: Meter | None = None,
                           tenant_label: Any = None, scrubber: Scrubber | None = None,
                           exporter: SpanExporter | None = None,
                           downstream: SpanProcessor | None = None) -> TracerProvider:
    """Build the tracer provider. `exporter` takes every kept span instead of the configured
    exporters (otel_crm.testing); `downstream` replaces the whole export chain (unit tests)."""
    provider = TracerProvider(resource=resource, sampler=head_sampler(settings), shutdown_on_exit=False)
    provider.add_span_processor(TenantSpanProcessor(capture_user_id=settings.capture_user_id))
    provider.add_span_processor(ServerSpanCapture())  # the access line's trace id (access.py)
    if meter is not None:
        provider.add_span_processor(RedMetricsProcessor(meter, tenant_label or (lambda _m, t: t)))
    chain = downstream if downstream is not None else _export_chain(settings, meter, scrubber, exporter)
    if chain is not None:
        provider.add_span_processor(sampling_processor(settings, chain, meter))
    return provider
