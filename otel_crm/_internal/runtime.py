"""The running otel_crm: settings plus the providers and shared guards composed from them.

One global holds the current :class:`Runtime`. ``configure()`` sets the one it composed;
``otel_crm.testing`` sets one backed by in-memory exporters for a block, then puts the previous
one back. Helpers and processors read it through :func:`current_runtime`; before anything was
set, that is a runtime built from the environment alone, with no providers of its own (the
global ones are used).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

from opentelemetry import metrics, trace
from opentelemetry.metrics import Meter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from otel_crm._internal import accounting, semconv
from otel_crm._internal.cardinality import CardinalityGuard
from otel_crm._internal.safety import report_internal_error
from otel_crm._internal.sampling.tail import TailSamplingProcessor
from otel_crm._internal.scrubbing import Scrubber
from otel_crm._internal.settings import Settings, resolve_settings
from otel_crm._internal.tenancy import tenant_form

__all__ = ["Origin", "Runtime", "cardinality_guard", "clear_current_runtime", "current_runtime",
           "global_tracer_provider_unset", "installed_runtime", "set_current_runtime"]

_T = TypeVar("_T")
_lock = threading.Lock()
_current: Runtime | None = None

# Who built it: resolve_settings alone (nothing set yet), configure(), or otel_crm.testing.
Origin = Literal["environment", "configure", "testing"]


@dataclass(eq=False)
class Runtime:
    settings: Settings
    # None: nothing composed (before configure(), or disabled): the global providers are used.
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    logger_provider: LoggerProvider | None = None
    cardinality: CardinalityGuard | None = None  # every request-derived metric attribute
    scrubber: Scrubber | None = None  # None: scrub_mode=off
    origin: Origin = "environment"
    tail_sampler: TailSamplingProcessor | None = None  # tail mode: the trace's final decision
    _cache: dict[str, object] = field(default_factory=dict)
    _shut_down: bool = False

    def tracer(self, name: str = "otel_crm") -> trace.Tracer:
        provider = self.tracer_provider or trace.get_tracer_provider()
        return provider.get_tracer(name)

    def meter(self, name: str = "otel_crm") -> metrics.Meter:
        provider = self.meter_provider or metrics.get_meter_provider()
        return provider.get_meter(name)

    def trace_sampled(self, trace_id: int, sampled_flag: bool) -> bool | None:
        """The final sampling decision of a trace of this runtime's provider, or None while it is
        not known (tail mode: until the trace's local part ended) or not ours to tell (nothing
        composed: the global provider may be anyone's). Head mode: the sampled flag; off and
        collector modes: everything is exported (in collector mode, to the collector's sampler)."""
        if self.tracer_provider is None:
            return None
        tail = self.tail_sampler
        if tail is not None:
            return tail.decision_for(trace_id) if sampled_flag else False
        if self.settings.sampling_mode == "head":
            return sampled_flag
        return True

    def cached(self, key: str, factory: Callable[[], _T]) -> _T:
        """Instruments and other per-runtime singletons, built once."""
        try:
            return cast(_T, self._cache[key])
        except KeyError:
            with _lock:
                if key not in self._cache:
                    self._cache[key] = factory()
                return cast(_T, self._cache[key])

    def tenant_label(self, metric: str, tenant_id: str | None) -> str | None:
        if tenant_id is None or self.cardinality is None:
            return tenant_id
        return self.cardinality.bound(metric, semconv.CRM_TENANT_ID, tenant_id)

    def metric_attributes(self, metric: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """`attributes` (changed in place) with every request-derived value scrubbed and bounded."""
        if self.cardinality is None:
            return attributes
        return self.cardinality.bound_all(metric, attributes)

    def shutdown(self) -> None:
        """Flush and stop this runtime's providers, once. Order matters: ending traces feeds
        RED metrics, so metrics flush last."""
        with _lock:
            if self._shut_down:
                return
            self._shut_down = True
        for signal, provider in (("traces", self.tracer_provider), ("logs", self.logger_provider),
                                 ("metrics", self.meter_provider)):
            if signal == "metrics" and self.origin == "configure":
                # Spans and log records still queued are lost from here on: counted (reason
                # shutdown) before the last metric export, which carries the count.
                accounting.settle(("traces", "logs"))
            if provider is None:
                continue
            try:
                provider.shutdown()
            except Exception as exc:
                report_internal_error("shutdown", exc, raise_in_tests=False)


def cardinality_guard(settings: Settings, meter: Meter | None, scrubber: Scrubber | None) -> CardinalityGuard:
    """The guard of every request-derived metric attribute: each value scrubbed (a tenant id in its
    one outgoing form), each attribute within its budget, overflows counted."""
    overflow = meter.create_counter(
        semconv.CRM_METRIC_OVERFLOW, unit="{measurement}",
        description="Measurements whose attribute value was recorded as __other__ (cardinality guard).",
    ) if meter is not None else None

    def on_overflow(metric: str, attribute: str) -> None:
        if overflow is not None:
            overflow.add(1, {semconv.CRM_METRIC_NAME: metric, semconv.CRM_METRIC_ATTRIBUTE: attribute})

    tenant = tenant_form(scrubber)

    def outgoing(attribute: str, value: str) -> str:
        if attribute == semconv.CRM_TENANT_ID:
            return tenant(value)
        return value if scrubber is None else str(scrubber.scrub_value(attribute, value, signal="metrics"))

    budgets = {attribute: getattr(settings, f"{group}_metric_limit")
               for group, attributes in semconv.GUARDED_METRIC_ATTRIBUTES.items() for attribute in attributes}
    return CardinalityGuard(budgets, {semconv.CRM_TENANT_ID: settings.tenant_allowlist}, on_overflow, outgoing)


def current_runtime() -> Runtime:
    """The current runtime; before any was set, one built from the environment alone."""
    global _current
    runtime = _current
    if runtime is None:
        with _lock:
            if _current is None:
                settings = resolve_settings()
                # The global providers' metrics get the same guard (budgets, scrubbed values).
                guard = cardinality_guard(settings, None, Scrubber.from_settings(settings))
                _current = Runtime(settings=settings, cardinality=guard)
            runtime = _current
    return runtime


def installed_runtime() -> Runtime | None:
    """The current runtime if one was set or built, without building one."""
    return _current


def set_current_runtime(runtime: Runtime) -> Runtime | None:
    """Make `runtime` current; returns the one it replaces."""
    global _current
    with _lock:
        previous, _current = _current, runtime
    return previous


def clear_current_runtime() -> None:
    global _current
    with _lock:
        _current = None


def global_tracer_provider_unset() -> bool:
    """Whether no SDK tracer provider was set globally yet (the API's proxy or no-op one is there)."""
    return isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
