"""A cheaper histogram recording through the SDK's own aggregations: the fourth part of the
SDK-compatibility layer (with sdk_compat.py, sdk_fast_paths.py and fast_tracer.py, the only modules
allowed private SDK names).

Two histograms are recorded on every request: the HTTP instrumentation's
``http.server.request.duration`` and RED's ``crm.request.duration``. The SDK's ``record`` builds a
``Measurement`` (cleaning a copy of the attributes), asks the exemplar filter, and for every reader
copies the attributes again, applies the view's attribute keys, hashes them (tagging each value with
its type) and looks the aggregation up, then locks it and adds the value.

:class:`FastHistogram` stands in for the SDK instrument. The first recording of an attribute set
goes through the SDK's own ``record``; then the aggregation objects every reader storage holds for
that set (after its views) are remembered under the set's items (a bounded :class:`Memo`), and later
recordings of an equal set (same keys, values and value types) add the value to them directly,
under each aggregation's own lock, as the SDK's ``aggregate`` does, and offer exemplars to their
reservoirs under the same filter. The aggregations are the SDK's: collection, temporality,
exemplars, views and the Prometheus reader see what they would have seen. What is remembered is
tied to the consumer's storage map, which the SDK replaces when a reader is added or removed (and
``sdk_compat.restart_metrics_after_fork`` replaces in a forked child): a stale entry is resolved again.

Anything else takes the SDK's path: a value the SDK warns about, attributes that are not plain
(str, int, float, bool under str keys), a disabled meter, aggregations other than the explicit
bucket histogram (their own ``aggregate`` is called). The assumptions are probed once, at the first
wrap: the same recordings through both paths must collect the same data; on any mismatch the SDK's
instrument is used and one warning says so.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping
from time import time_ns
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import _clean_attribute_value
from opentelemetry.context import Context, get_current
from opentelemetry.metrics import Histogram
from opentelemetry.sdk.metrics import (
    AlignedHistogramBucketExemplarReservoir,
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes
from opentelemetry.sdk.metrics._internal.aggregation import (
    _DropAggregation,
    _ExplicitBucketHistogramAggregation,
)
from opentelemetry.sdk.metrics._internal.instrument import _Histogram
from opentelemetry.sdk.metrics._internal.measurement import Measurement
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util.types import Attributes

from otel_crm._internal import semconv
from otel_crm._internal.memo import Memo
from otel_crm._internal.safety import guard
from otel_crm._internal.sdk_compat import check_feature

__all__ = ["FastHistogram", "comparable", "fast_histogram"]

MEMO_LIMIT = 2048  # attribute sets remembered per histogram; a full memo starts again (bounded)
_PLAIN = frozenset({str, int, float, bool})
_INF = math.inf
_SDK_AGGREGATE = _ExplicitBucketHistogramAggregation.aggregate
_OFF, _ON, _TRACE, _OTHER = 0, 1, 2, 3
_get_current_span = trace_api.get_current_span


class _Entry:
    """What one attribute set resolved to, for the storage map it was resolved against."""

    __slots__ = ("attributes", "histograms", "others", "storages", "types")

    def __init__(self, storages: object, types: tuple[type, ...], attributes: Attributes,
                 histograms: tuple[Any, ...], others: tuple[Any, ...]) -> None:
        self.storages = storages
        self.types = types
        self.attributes = attributes  # the SDK's cleaned copy: what exemplars keep
        self.histograms = histograms  # explicit bucket aggregations (with their lock, bounds, reservoir)
        self.others = others  # any other aggregation: its own aggregate()


class FastHistogram(Histogram):
    """The SDK histogram `inner`, recorded through its remembered aggregations (module docstring)."""

    def __init__(self, inner: Any) -> None:
        # (the API's __init__ stores nothing: name, unit and description are read from `inner`)
        self._inner = inner
        self._consumer: Any = inner._measurement_consumer
        self._config: Any = inner._meter_config
        exemplar_filter = self._consumer._sdk_config.exemplar_filter
        self._filter = exemplar_filter
        self._mode = {AlwaysOnExemplarFilter: _ON, AlwaysOffExemplarFilter: _OFF,
                      TraceBasedExemplarFilter: _TRACE}.get(type(exemplar_filter), _OTHER)
        self._memo: Memo[tuple[Any, ...], _Entry] = Memo(MEMO_LIMIT)

    def __getattr__(self, name: str) -> Any:  # anything else the SDK instrument has
        return getattr(self._inner, name)

    def record(self, amount: float, attributes: Attributes = None, context: Context | None = None) -> None:
        kind = type(amount)
        config = self._config
        if ((kind is not float and kind is not int) or not 0 <= amount < _INF
                or (attributes is not None and type(attributes) is not dict)
                or (config is not None and not config.is_enabled)):
            self._inner.record(amount, attributes, context)  # the SDK's warnings, or its no-op
            return
        try:  # runs on every request: `guard` only sees the (never expected) exception
            key = tuple(attributes.items()) if attributes else ()
            try:
                entry = self._memo.get(key)
            except TypeError:  # an unhashable value (a list): the SDK's path
                entry = None
            storages = self._consumer._reader_storages
            if (entry is None or entry.storages is not storages
                    or (key and tuple(map(type, attributes.values())) != entry.types)):  # type: ignore[union-attr]
                self._inner.record(amount, attributes, context)
                self._remember(key, attributes, storages)
                return
            self._add(entry, amount, context if context is not None else get_current())
        except Exception:
            with guard("metrics"):
                raise

    def record_fixed(self, amount: float, attributes: dict[str, Any], entry: _Entry | None) -> _Entry | None:
        """`record(amount, attributes)` for a caller whose `attributes` dict never changes (RED's
        rows): pass what the previous call with that dict returned (None at first), keep what this
        one returns. While the storage map stays the same, the set's key, memo lookup and type
        checks are skipped; anything else (the first call, a new reader, an int or a value the SDK
        warns about, a disabled meter) records through `record` and resolves the entry again."""
        config = self._config
        if (entry is not None and entry.storages is self._consumer._reader_storages and type(amount) is float
                and 0 <= amount < _INF and (config is None or config.is_enabled)):
            try:  # runs on every request: `guard` only sees the (never expected) exception
                self._add(entry, amount, get_current())
            except Exception:
                with guard("metrics"):
                    raise
            return entry
        self.record(amount, attributes)
        found = self._memo.lookup(tuple(attributes.items()))
        if (found is None or found.storages is not self._consumer._reader_storages
                or found.types != tuple(map(type, attributes.values()))):  # an equal set of other types
            return None
        return found

    def _add(self, entry: _Entry, value: float, context: Context) -> None:
        mode = self._mode
        if mode == _TRACE:  # TraceBasedExemplarFilter.should_sample
            span = _get_current_span(context)
            sample = False if span == INVALID_SPAN else span.get_span_context().trace_flags.sampled
        else:
            sample = mode == _ON
        now = time_ns() if sample or mode == _OTHER or entry.others else 0
        if mode == _OTHER:
            sample = self._filter.should_sample(value, now, entry.attributes, context)
        for aggregation, lock, boundaries, aligned in entry.histograms:  # the SDK's aggregate()
            index = bisect_left(boundaries, value)
            with lock:
                counts = aggregation._value
                if counts is None:
                    counts = aggregation._value = aggregation._get_empty_bucket_counts()
                aggregation._sum += value
                if aggregation._record_min_max:
                    aggregation._min = min(aggregation._min, value)
                    aggregation._max = max(aggregation._max, value)
                counts[index] += 1
            if sample:
                if aligned is not None:  # its offer(): the bucket of `value` (the same bisect) keeps it
                    with aligned._lock:
                        aligned._reservoir_storage[index].offer(value, now, entry.attributes, context)
                else:
                    aggregation._reservoir.offer(value, now, entry.attributes, context)
        if entry.others:
            measurement = Measurement(value, now, self._inner, context, entry.attributes)
            for other in entry.others:
                other.aggregate(measurement, sample)

    def _remember(self, key: tuple[Any, ...], attributes: Attributes, storages: Any) -> None:
        """Remember the aggregations the SDK's own recording of `attributes` just used (if plain)."""
        if attributes and not all(type(name) is str and type(value) in _PLAIN
                                  for name, value in attributes.items()):
            return
        cleaned: Any = _clean_attribute_value(attributes, None) if attributes is not None else None
        histograms: list[Any] = []
        others: list[Any] = []
        for storage in storages.values():
            matches = storage._instrument_view_instrument_matches.get(self._inner)
            if matches is None:  # the storage map changed after the SDK's recording: next time
                return
            for match in matches:
                point = dict(cleaned or {})
                names = match._view._attribute_keys
                if names is not None:
                    point = {name: value for name, value in point.items() if name in names}
                aggregation = match._attributes_aggregation.get(_hash_attributes(point))
                if aggregation is None:
                    return
                if type(aggregation) is _DropAggregation:
                    continue
                if (type(aggregation) is _ExplicitBucketHistogramAggregation
                        and type(aggregation).aggregate is _SDK_AGGREGATE):
                    reservoir = aggregation._reservoir
                    aligned = reservoir if (type(reservoir) is AlignedHistogramBucketExemplarReservoir
                                            and tuple(reservoir._boundaries) == aggregation._boundaries) else None
                    histograms.append((aggregation, aggregation._lock, aggregation._boundaries, aligned))
                else:
                    others.append(aggregation)
        types = tuple(type(value) for value in attributes.values()) if attributes else ()
        # No lock (none to be left held by a fork): racing puts may hold a few more sets for a moment.
        self._memo.put(key, _Entry(storages, types, cleaned, tuple(histograms), tuple(others)))


_checked: list[bool] = []


def fast_histogram(instrument: Any, enabled: bool = True) -> Any:
    """`instrument` as a :class:`FastHistogram` when it is the SDK's histogram and this SDK passes
    the probe (run once); else `instrument` itself. One wrapper per SDK instrument (the SDK hands the
    same instrument to every registration of a name), kept on the instrument: it lives as long."""
    if not enabled or type(instrument) is not _Histogram:
        return instrument
    if not _checked:
        _checked.append(check_feature("the histogram path (record)",
                                      "histograms are recorded by the SDK's own (slower) path", _same_data))
    if not _checked[0]:
        return instrument
    holder: Any = instrument
    wrapper = getattr(holder, "_crm_fast_histogram", None)
    if wrapper is None:  # (two threads racing here make two wrappers: both record into the same)
        wrapper = holder._crm_fast_histogram = FastHistogram(instrument)
    return wrapper


# --- the probe --------------------------------------------------------------------------------------

def comparable(value: Any) -> Any:
    """Collected metrics data (points, exemplars, resources, scopes) as plain values with every
    timestamp zeroed (the two paths read the clock at different moments)."""
    kind = type(value)
    if kind is str or value is None:
        return value
    if kind is int or kind is float or kind is bool or isinstance(value, (int, float, str)):
        return kind.__name__, value  # typed: 10 and 10.0, 1 and True are different data (enums too)
    if kind is list or kind is tuple:
        return [comparable(item) for item in value]
    if isinstance(value, Mapping):
        return {key: comparable(item) for key, item in value.items()}
    fields = getattr(value, "__dataclass_fields__", None)
    if fields is not None:
        names = list(fields)
    elif hasattr(value, "__dict__"):
        names = [name for name in vars(value) if name != "_lock"]
    else:  # a slotted object (the instrumentation scope)
        names = [name for cls in kind.__mro__ for name in getattr(cls, "__slots__", ())]
    return kind.__name__, {name: 0 if name.endswith("time_unix_nano") else comparable(getattr(value, name))
                           for name in names}


_PROBE_RESOURCE = Resource({semconv.SERVICE_NAME: "probe"})


def _script(fast: bool, exemplar_filter: Any) -> list[Any]:
    readers = [InMemoryMetricReader(), InMemoryMetricReader(preferred_temporality={
        SdkHistogram: AggregationTemporality.DELTA})]
    views = [View(instrument_name="h", attribute_keys={"a"}),  # points merge, exemplars keep the rest
             View(instrument_name="h", name="h2"),
             # another aggregation: its own aggregate() (a reservoir of 8 keeps every exemplar: no draws)
             View(instrument_name="e", aggregation=ExponentialBucketHistogramAggregation(max_size=8))]
    provider = MeterProvider(metric_readers=readers[:1], views=views, exemplar_filter=exemplar_filter,
                             resource=_PROBE_RESOURCE, shutdown_on_exit=False)  # (no resource detection)
    meter = provider.get_meter("probe")
    sampled = trace_api.set_span_in_context(NonRecordingSpan(SpanContext(5, 6, False, TraceFlags(1))))
    histograms: list[Any] = []
    for name in ("h", "e"):
        instrument = meter.create_histogram(name, "s", explicit_bucket_boundaries_advisory=[1.0, 2.0])
        histograms.append(FastHistogram(instrument) if fast else instrument)
    recordings: tuple[tuple[float, Attributes], ...] = (
        (1.0, {"a": "x", "b": 1}), (0.5, {"a": "x", "b": 1}), (3, {"a": True}), (2.0, {"a": 1}),
        (1.5, {"a": "x", "b": 2}), (4.0, None), (1.0, {"b": 1, "a": "x"}), (2.5, {"a": 1}), (7, {"a": True}))
    for histogram in histograms:
        for value, attributes in recordings:
            histogram.record(value, attributes, sampled if value > 1 else None)
    made: list[Any] = [comparable(readers[0].get_metrics_data())]
    provider.add_metric_reader(readers[1])  # a reader added later
    for histogram in histograms:
        for value in (0.25, 2.5, 2.0):
            histogram.record(value, {"a": "x", "b": 1}, sampled)
    made.extend(comparable(reader.get_metrics_data()) for reader in readers)
    provider.shutdown()
    return made


def _same_data() -> bool:
    # The filter only decides which recordings offer exemplars; the unit tests cover every filter.
    return _script(False, AlwaysOnExemplarFilter()) == _script(True, AlwaysOnExemplarFilter())
