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
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from otel_crm._internal import accounting
from otel_crm._internal.compose import compose
from otel_crm._internal.fast_tracer import tracer_provider_class
from otel_crm._internal.runtime import (
    Runtime,
    clear_current_runtime,
    global_tracer_provider_unset,
    set_current_runtime,
)
from otel_crm._internal.sdk_compat import active_span_processor
from otel_crm._internal.settings import resolve_settings

__all__ = ["CapturedTelemetry", "capture_telemetry", "otel_crm_telemetry", "telemetry_accounting"]

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
        if not global_tracer_provider_unset():
            return None
        # production's span path (fast_tracer.py), as composed pipelines have
        provider = tracer_provider_class()(resource=Resource({"service.name": "test-service"}),
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
    runtime: Runtime

    def spans(self) -> list[ReadableSpan]:
        if self.runtime.tracer_provider is not None:
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
        if self.runtime.logger_provider is not None:
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
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader(preferred_temporality=dict.fromkeys(_INSTRUMENT_TYPES, AggregationTemporality.DELTA))
    log_exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    runtime = compose(resolved, span_exporter=span_exporter or exporter, metric_readers=(reader,),
                      log_exporter=log_exporter, origin="testing")
    previous = set_current_runtime(runtime)
    delegate = _global_delegate()
    tracer_provider = runtime.tracer_provider
    target = active_span_processor(tracer_provider) if tracer_provider is not None else None
    if delegate is not None and tracer_provider is not None and target is not None:
        delegate.target = target
        _delegate_sampler.target = tracer_provider.sampler
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    handler = LoggingHandler(level=logging.DEBUG, logger_provider=runtime.logger_provider)
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
            set_current_runtime(previous)
        else:
            clear_current_runtime()
        runtime.shutdown()


def telemetry_accounting() -> dict[str, dict[str, Any]]:
    """This process's export accounting, per signal (`traces`, `logs`, `metrics`): `produced`,
    `exported`, `dropped` (by `crm.drop.reason`) and `pending` (queued or in an export call).
    `produced == exported + sum(dropped) + pending` always; after the exit flush (or
    ``otel_crm.shutdown()``) `pending` is 0. Counts the OTLP export pipelines of ``configure()``
    (docs/telemetry.md, "Every item accounted for"); spans the sampler dropped are not produced."""
    return {signal: tally.as_dict() for signal, tally in accounting.snapshot().items()}


_INSTRUMENT_TYPES = (Counter, Histogram, ObservableCounter, ObservableGauge, ObservableUpDownCounter, UpDownCounter)


try:  # the fixture exists only where pytest does
    import pytest

    @pytest.fixture
    def otel_crm_telemetry() -> Iterator[CapturedTelemetry]:
        """In-memory spans, metrics and logs through otel_crm's own processors."""
        with capture_telemetry() as telemetry:
            yield telemetry

except ImportError:  # pragma: no cover
    pass
