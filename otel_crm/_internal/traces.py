"""Traces: tenant attribution on start, RED metrics and tail sampling on end, then batch export.
Which sampler and sampling processor the mode asks for is decided in the `sampling` package.

    span start ─ TenantSpanProcessor (crm.tenant.id from context)
    span end ─┬─ RedMetricsProcessor (100% of entry spans, before sampling)
              └─ TailSamplingProcessor ─ kept spans ─ CountingBatchSpanProcessor
                                                         └─ ScrubbingSpanExporter ─ OTLP (export thread)
"""

from __future__ import annotations

from typing import Any

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

from otel_crm._internal import semconv
from otel_crm._internal.access import ServerSpanCapture
from otel_crm._internal.cardinality import CardinalityGuard
from otel_crm._internal.exporters import QueueGuard, otlp_exporter
from otel_crm._internal.fast_tracer import tracer_provider_class
from otel_crm._internal.red import RedMetricsProcessor
from otel_crm._internal.sampling import TailSamplingProcessor, head_sampler, sampling_processor
from otel_crm._internal.scrub_pipeline import ScrubbingSpanExporter
from otel_crm._internal.scrubbing import Scrubber
from otel_crm._internal.settings import Settings
from otel_crm._internal.tenancy import TenantSpanProcessor, tenant_form

__all__ = ["CountingBatchSpanProcessor", "build_tracing", "create_tracer_provider"]


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that drops and counts instead of logging per span when full."""

    def __init__(self, exporter: SpanExporter, *, meter: Meter | None = None, **kwargs: Any):
        super().__init__(exporter, **kwargs)
        self._guard = QueueGuard(self, "traces", meter)

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:  # recorded only (head mode): never exported
            return
        self._guard.offer(span, super().on_end)


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
        # The one place kept spans are rewritten (on the export thread): corrections, SQL literals,
        # then the scrubber when there is one.
        scrubbed = ScrubbingSpanExporter(target, scrubber, sanitize_sql=not settings.capture_db_literals)
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


def create_tracer_provider(settings: Settings, resource: Resource, *, meter: Meter | None = None,
                           cardinality: CardinalityGuard | None = None, scrubber: Scrubber | None = None,
                           exporter: SpanExporter | None = None,
                           downstream: SpanProcessor | None = None) -> TracerProvider:
    """Build the tracer provider. `exporter` takes every kept span instead of the configured
    exporters (otel_crm.testing); `downstream` replaces the whole export chain (unit tests)."""
    return build_tracing(settings, resource, meter=meter, cardinality=cardinality, scrubber=scrubber,
                         exporter=exporter, downstream=downstream)[0]


def build_tracing(settings: Settings, resource: Resource, *, meter: Meter | None = None,
                  cardinality: CardinalityGuard | None = None, scrubber: Scrubber | None = None,
                  exporter: SpanExporter | None = None, downstream: SpanProcessor | None = None,
                  ) -> tuple[TracerProvider, TailSamplingProcessor | None]:
    """The tracer provider and, in tail mode, its tail sampler (the runtime asks it for a trace's
    final decision: `trace_sampled` on log lines)."""
    service = resource.attributes.get(semconv.SERVICE_NAME)
    sampler = head_sampler(settings, str(service) if service is not None else None)
    # The SDK's provider, or its subclass with a cheaper span path when this SDK passes its probe.
    provider = tracer_provider_class(settings.fast_spans)(resource=resource, sampler=sampler, shutdown_on_exit=False)
    provider.add_span_processor(TenantSpanProcessor(capture_user_id=settings.capture_user_id,
                                                    form=tenant_form(scrubber)))
    provider.add_span_processor(ServerSpanCapture())  # the access line's trace id (access.py)
    if meter is not None:
        provider.add_span_processor(RedMetricsProcessor(meter, cardinality, fast=settings.fast_spans))
    chain = downstream if downstream is not None else _export_chain(settings, meter, scrubber, exporter)
    tail: TailSamplingProcessor | None = None
    if chain is not None:
        processor = sampling_processor(settings, chain, meter)
        if isinstance(processor, TailSamplingProcessor):
            tail = processor
        provider.add_span_processor(processor)
    return provider, tail
