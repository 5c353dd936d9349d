"""The tail sampler's self-metrics: observable instruments reading its counters."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_crm._internal import semconv

__all__ = ["create_instruments"]


class _Counted(Protocol):
    def stats(self) -> dict[str, Any]: ...


def create_instruments(meter: Meter, ref: weakref.ref[Any]) -> None:
    """Counted under the lock the sampler already holds on the hot path, reported by callbacks: no
    per-span instrument call. Callbacks hold a weakref so the meter does not keep the sampler alive."""

    def observe(key: str, attribute: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Sequence[Observation]:
            processor: _Counted | None = ref()
            if processor is None:
                return []
            value = processor.stats()[key]
            if isinstance(value, int):
                return [Observation(value)]
            return [Observation(count, {attribute: name}) for name, count in value.items()]
        return callback

    meter.create_observable_counter(
        semconv.CRM_SAMPLER_TRACES, [observe("traces", semconv.CRM_SAMPLING_REASON)], unit="{trace}",
        description="Traces decided by the tail sampler, by reason (dropped included).")
    meter.create_observable_counter(
        semconv.CRM_SAMPLER_SPANS, [observe("spans", semconv.CRM_SAMPLING_DECISION)], unit="{span}",
        description="Spans that went through the tail sampler, kept or dropped.")
    meter.create_observable_counter(
        semconv.CRM_SAMPLER_EVICTIONS, [observe("evictions", semconv.CRM_SAMPLING_REASON)],
        unit="{eviction}", description="Traces decided early (late_unknown: spans of a forgotten trace), "
                                    "by bound: max_traces, max_spans, max_spans_per_trace, max_age, "
                                    "late_unknown.")
    meter.create_observable_counter(
        semconv.CRM_SAMPLER_PARTIAL_TRACES, [observe("partial", semconv.CRM_SAMPLING_REASON)],
        unit="{trace}", description="Remainders of traces dropped early (span or age bound) that were kept "
                                    "for a later error or slow root (partial traces), by reason.")
    meter.create_observable_gauge(
        semconv.CRM_SAMPLER_BUFFER_TRACES, [observe("buffer_traces", "")], unit="{trace}",
        description="Undecided traces held by the tail sampler.")
    meter.create_observable_gauge(
        semconv.CRM_SAMPLER_BUFFER_SPANS, [observe("buffer_spans", "")], unit="{span}",
        description="Spans tracked by the tail sampler (open and buffered).")
