"""Test support for otel_crm users: in-memory spans, metrics and logs through the distro's own
processors (tenant attribution, RED metrics, scrubbing, optionally tail sampling).

As a pytest plugin (registered automatically when otel_crm is installed)::

    def test_qualify_lead(otel_crm_telemetry):
        qualify_lead(42)
        span = otel_crm_telemetry.span("execute_workflow qualify_lead")
        assert span.attributes["crm.workflow.name"] == "qualify_lead"
        assert otel_crm_telemetry.metric_sum("crm.workflow.executions") == 1

Without pytest: ``with capture_telemetry() as telemetry: ...``.
Instrumentation spans (Flask, requests…) are captured too when no other tracer provider was
installed globally first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from otel_crm._internal import state
from otel_crm._internal.config import _tenant_labeler, build_scrubber
from otel_crm._internal.logs import create_logger_provider
from otel_crm._internal.metrics import create_meter_provider
from otel_crm._internal.resource import create_resource
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.traces import create_tracer_provider

__all__ = ["CapturedTelemetry", "capture_telemetry", "otel_crm_telemetry"]

_TEST_DEFAULTS: dict[str, Any] = {
    "service_name": "test-service",
    "sampling_mode": "off",
    "traces_exporter": ("none",),
    "metrics_exporter": ("none",),
    "logs_exporter": ("none",),
    "log_format": "none",
    "log_level": "debug",
}


class _Delegate(SpanProcessor):
    """Installed once in the global tracer provider; forwards to the current test's pipeline."""

    target: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.target is not None:
            self.target.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.target is not None:
            self.target.on_end(span)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.target.force_flush(timeout_millis) if self.target is not None else True


class _DelegateSampler(Sampler):
    """The global provider's sampler: the current test's (e.g. head mode), always-on between tests.
    Tracers copy their provider's sampler when created, so the global one must forward."""

    target: Sampler = ALWAYS_ON

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,  # noqa: PLR0917
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state: Any = None) -> SamplingResult:
        return self.target.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return self.target.get_description()


_delegate: _Delegate | None = None
_delegate_sampler = _DelegateSampler()


def _global_delegate() -> _Delegate | None:
    global _delegate
    if _delegate is None:
        current = trace.get_tracer_provider()
        if type(current).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider"):
            return None
        provider = TracerProvider(resource=Resource({"service.name": "test-service"}),
                                  sampler=_delegate_sampler, shutdown_on_exit=False)
        _delegate = _Delegate()
        provider.add_span_processor(_delegate)
        trace.set_tracer_provider(provider)
    return _delegate


@dataclass
class CapturedTelemetry:
    span_exporter: InMemorySpanExporter
    metric_reader: InMemoryMetricReader
    log_exporter: InMemoryLogRecordExporter
    runtime: state.Runtime

    def spans(self) -> list[ReadableSpan]:
        self.runtime.tracer_provider.force_flush()
        return list(self.span_exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called `name` (fails if there are none or several)."""
        matches = [s for s in self.spans() if s.name == name]
        if len(matches) != 1:
            names = sorted({s.name for s in self.spans()})
            raise AssertionError(f"expected one span {name!r}, found {len(matches)}; spans: {names}")
        return matches[0]

    def _collect(self) -> None:
        data = self.metric_reader.get_metrics_data()
        if data is None:
            return
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    self._points.setdefault(metric.name, []).extend(metric.data.data_points)
                    self._units[metric.name] = metric.unit or ""

    def metric_points(self, name: str) -> list[Any]:
        """Every data point of metric `name` recorded so far (delta points: one per collection)."""
        self._collect()
        return list(self._points.get(name, []))

    def metric_unit(self, name: str) -> str | None:
        self._collect()
        return self._units.get(name)

    def metric_sum(self, name: str, **attributes: Any) -> float:
        """Sum of a counter's points (or of a histogram's counts) matching `attributes`."""
        total = 0.0
        for point in self.metric_points(name):
            if all(point.attributes.get(k.replace("__", ".")) == v for k, v in attributes.items()):
                total += float(getattr(point, "value", None) or getattr(point, "count", 0) or 0)
        return total

    def logs(self) -> list[ReadableLogRecord]:
        self.runtime.logger_provider.force_flush()
        return list(self.log_exporter.get_finished_logs())

    def clear(self) -> None:
        self.span_exporter.clear()
        self.log_exporter.clear()
        self._collect()
        self._points.clear()

    def __post_init__(self) -> None:
        self._units: dict[str, str] = {}
        self._points: dict[str, list[Any]] = {}


@contextmanager
def capture_telemetry(*, span_exporter: SpanExporter | None = None, **settings: Any) -> Iterator[CapturedTelemetry]:
    """Install an in-memory otel_crm runtime for the duration of the block.

    Keyword arguments are otel_crm settings (defaults: no sampling, nothing sent anywhere).
    """
    resolved = resolve_settings({}, **{**_TEST_DEFAULTS, **settings})
    resource = create_resource(resolved)
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader(preferred_temporality=dict.fromkeys(
        _instrument_types(), AggregationTemporality.DELTA))
    meter_provider = create_meter_provider(resolved, resource, extra_readers=(reader,))
    meter = meter_provider.get_meter("otel_crm")
    scrubber = build_scrubber(resolved)
    labeler = _tenant_labeler(resolved, meter)
    downstream_exporter: SpanExporter = span_exporter or exporter
    if scrubber is not None:
        from otel_crm._internal.scrub_pipeline import ScrubbingSpanExporter

        downstream_exporter = ScrubbingSpanExporter(downstream_exporter, scrubber)
    tracer_provider = create_tracer_provider(resolved, resource, meter=meter, tenant_label=labeler.label,
                                             scrubber=scrubber,
                                             downstream=SimpleSpanProcessor(downstream_exporter))
    log_exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    logger_provider = create_logger_provider(resolved, resource, scrubber=scrubber,
                                             downstream=SimpleLogRecordProcessor(log_exporter))
    runtime = state.Runtime(settings=resolved, tracer_provider=tracer_provider,
                            meter_provider=meter_provider, logger_provider=logger_provider,
                            tenant_labeler=labeler, scrubber=scrubber)
    previous = state.install(runtime)
    delegate = _global_delegate()
    if delegate is not None:
        delegate.target = tracer_provider._active_span_processor
        _delegate_sampler.target = tracer_provider.sampler
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    handler = LoggingHandler(level=logging.DEBUG, logger_provider=logger_provider)
    root = logging.getLogger()
    root.addHandler(handler)
    root_level = root.level
    root.setLevel(logging.DEBUG)  # capture like caplog does: every level reaches the handler
    try:
        yield CapturedTelemetry(exporter, reader, log_exporter, runtime)
    finally:
        root.removeHandler(handler)
        root.setLevel(root_level)
        if delegate is not None:
            delegate.target = None
            _delegate_sampler.target = ALWAYS_ON
        if previous is not None:
            state.install(previous)
        else:
            state.uninstall()
        tracer_provider.shutdown()
        logger_provider.shutdown()
        meter_provider.shutdown()


def _instrument_types() -> list[type]:
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )

    return [Counter, Histogram, ObservableCounter, ObservableGauge, ObservableUpDownCounter, UpDownCounter]


try:  # the fixture exists only where pytest does
    import pytest

    @pytest.fixture
    def otel_crm_telemetry() -> Iterator[CapturedTelemetry]:
        """In-memory spans, metrics and logs through otel_crm's own processors."""
        with capture_telemetry() as telemetry:
            yield telemetry

except ImportError:  # pragma: no cover
    pass
