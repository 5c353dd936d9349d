"""`compose(settings) -> Runtime`: the one recipe that builds otel_crm's pipelines.

Pure in the sense that matters: it sets nothing global — no global provider, propagator or log
handler, no exit, signal or fork hook, no environment variable. ``configure()`` composes, then
installs the result (lifecycle.py); ``otel_crm.testing`` composes with in-memory exporters passed
in and installs nothing, so tests run production's processors in production's order.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace.export import SpanExporter

from otel_crm._internal.logs import create_logger_provider
from otel_crm._internal.metrics import create_meter_provider
from otel_crm._internal.resource import create_resource, distro_version
from otel_crm._internal.runtime import Origin, Runtime, cardinality_guard
from otel_crm._internal.scrub_patterns import ScrubCallback
from otel_crm._internal.scrubbing import Scrubber
from otel_crm._internal.settings import Settings
from otel_crm._internal.traces import build_tracing

__all__ = ["compose"]


def compose(settings: Settings, *, span_exporter: SpanExporter | None = None,
            metric_readers: Sequence[MetricReader] = (), log_exporter: LogRecordExporter | None = None,
            origin: Origin = "configure", scrub_callback: ScrubCallback | None = None) -> Runtime:
    """Resource, metrics, traces and logs for `settings`, sharing one scrubber and one
    cardinality guard. `span_exporter` / `log_exporter` take every kept span / log record instead of the
    configured exporters (synchronously); `metric_readers` are added to the configured ones."""
    if settings.disabled:
        return Runtime(settings=settings, origin=origin)
    resource = create_resource(settings)
    meter_provider = create_meter_provider(settings, resource, extra_readers=tuple(metric_readers))
    meter = meter_provider.get_meter("otel_crm", distro_version())
    scrubber = Scrubber.from_settings(settings, callback=scrub_callback)
    guard = cardinality_guard(settings, meter, scrubber)
    tracer_provider, tail_sampler = build_tracing(settings, resource, meter=meter, cardinality=guard,
                                                  scrubber=scrubber, exporter=span_exporter)
    logger_provider = create_logger_provider(
        settings, resource, scrubber=scrubber, meter=meter,
        downstream=SimpleLogRecordProcessor(log_exporter) if log_exporter is not None else None)
    return Runtime(settings=settings, tracer_provider=tracer_provider, meter_provider=meter_provider,
                   logger_provider=logger_provider, cardinality=guard, scrubber=scrubber, origin=origin,
                   tail_sampler=tail_sampler)
