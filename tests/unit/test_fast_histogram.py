"""The fast histogram path collects exactly what the SDK's own `record` collects (a differential
test over attribute sets, views, exemplar filters, temporalities, readers added later, forks and
concurrent collection), stays bounded, and falls back to the SDK's instrument with one warning when
its probe finds a difference."""

from __future__ import annotations

import logging
import math
import random
import sys
import threading
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Histogram,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import (
    DropAggregation,
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from otel_crm._internal import fast_histogram, red, sdk_compat
from otel_crm._internal.cardinality import CardinalityGuard
from otel_crm._internal.corrections import CorrectingMeterProvider
from otel_crm._internal.fast_histogram import FastHistogram, comparable
from otel_crm._internal.metrics import semconv_views

_RESOURCE = Resource({"service.name": "differential"})
_FILTERS: dict[str, Callable[[], Any]] = {
    "always_on": AlwaysOnExemplarFilter, "trace_based": TraceBasedExemplarFilter, "always_off": AlwaysOffExemplarFilter}
_DELTA = {Histogram: AggregationTemporality.DELTA}


def _context(sampled: bool) -> Context:
    span = NonRecordingSpan(SpanContext(0xABC, 0xDEF, False, TraceFlags(1 if sampled else 0)))
    return trace.set_span_in_context(span)


_CONTEXTS = (None, _context(True), _context(False))


def _views() -> list[View]:
    return [*semconv_views(),
            View(instrument_name="http.server.request.duration", name="by.method",  # a second stream,
                 attribute_keys={"http.request.method"}),  # attributes dropped: exemplars keep them
            View(instrument_name="renamed", name="renamed.out", description="renamed",
                 aggregation=ExplicitBucketHistogramAggregation(boundaries=[1.0, 10.0], record_min_max=False)),
            View(instrument_name="exponential", aggregation=ExponentialBucketHistogramAggregation(max_size=20)),
            View(instrument_name="dropped", aggregation=DropAggregation())]


def _provider(exemplar_filter: str, temporality: dict[type, AggregationTemporality] | None,
              ) -> tuple[MeterProvider, list[InMemoryMetricReader]]:
    readers = [InMemoryMetricReader(preferred_temporality=temporality),
               InMemoryMetricReader(preferred_temporality=_DELTA)]
    provider = MeterProvider(metric_readers=readers, views=_views(), resource=_RESOURCE,
                             exemplar_filter=_FILTERS[exemplar_filter](), shutdown_on_exit=False)
    return provider, readers


def _attribute_sets(rng: random.Random) -> Iterator[Any]:
    methods = ("GET", "POST", "_OTHER")
    while True:
        pick = rng.random()
        if pick < 0.8:
            attributes: dict[str, Any] = {"http.request.method": rng.choice(methods),
                                          "http.route": f"/r{rng.randrange(300)}",
                                          "http.response.status_code": rng.choice((200, 404, 500))}
            if rng.random() < 0.2:
                attributes = dict(reversed(attributes.items()))  # the same set in another order
            yield attributes
        elif pick < 0.85:
            yield rng.choice(({"flag": True}, {"flag": 1}, {"flag": 1.0}, {"flag": "1"}))  # equal, not the same
        elif pick < 0.9:
            yield rng.choice((None, {}))
        elif pick < 0.93:
            yield {"seq": rng.choice(([1, 2], (1, 2), ("a",))), "n": rng.randrange(3)}  # not plain: SDK path
        elif pick < 0.95:  # not a dict: the SDK's path (a mapping proxy; a list the SDK warns about)
            yield rng.choice((MappingProxyType({"http.request.method": "GET"}), [("http.request.method", "GET")]))
        else:
            yield {"float": rng.choice((0.0, -0.0, 1.5)), "big": "x" * rng.randrange(1, 3)}


def _values(rng: random.Random) -> Iterator[float]:
    edges = (0.0, 0.005, 0.01, 0.25, 1.0, 10.0, 60.0, 61.0)  # on bucket boundaries too
    while True:
        pick = rng.random()
        if pick < 0.7:
            yield rng.choice((rng.random(), rng.randrange(20) / 4))
        elif pick < 0.9:
            yield rng.choice(edges)
        elif pick < 0.95:
            yield rng.randrange(100)  # an int
        else:
            yield rng.choice((-1.0, math.nan, math.inf, -math.inf, True))  # the SDK's warnings, or bool


def _script(fast: bool, exemplar_filter: str, temporality: dict[type, AggregationTemporality] | None,
            monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    random.seed(7)  # the exponential histogram's reservoir samples with `random`: the same draws
    rng = random.Random(11)
    provider, readers = _provider(exemplar_filter, temporality)
    meter = provider.get_meter("differential", "1")
    histograms = {name: meter.create_histogram(name, "s", "d")
                  for name in ("http.server.request.duration", "renamed", "exponential", "dropped")}
    if fast:
        histograms = {name: FastHistogram(h) for name, h in histograms.items()}
    attribute_sets, values = _attribute_sets(rng), _values(rng)
    collected: list[Any] = []
    late = InMemoryMetricReader(preferred_temporality=temporality)
    for step in range(2500):
        name = rng.choice(tuple(histograms))
        histograms[name].record(next(values), next(attribute_sets), rng.choice(_CONTEXTS))  # type: ignore[arg-type]
        if step % 400 == 399:
            collected.extend(comparable(reader.get_metrics_data()) for reader in readers)
        if step == 1000:
            provider.add_metric_reader(late)  # a reader added later
            readers.append(late)
        if step == 1700:
            sdk_compat.restart_metrics_after_fork(provider)  # what a forked child gets: fresh stores
        if step == 2000:
            provider.remove_metric_reader(readers.pop(0))
    collected.extend(comparable(reader.get_metrics_data()) for reader in readers)
    if fast:  # the fast path was taken (most sets were seen before)
        assert all(len(h._memo) for name, h in histograms.items() if name != "dropped")  # type: ignore[attr-defined]
    provider.shutdown()
    return collected


@pytest.mark.parametrize("temporality", [None, _DELTA], ids=["cumulative", "delta"])
@pytest.mark.parametrize("exemplar_filter", list(_FILTERS))
def test_the_same_recordings_collect_the_same_data(exemplar_filter: str, temporality: Any,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(fast_histogram, "MEMO_LIMIT", 64)  # fewer than the sets: the memo starts again
    with caplog.at_level(logging.WARNING):
        expected = _script(False, exemplar_filter, temporality, monkeypatch)
        sdk_warnings = [r.getMessage() for r in caplog.records]
        caplog.clear()
        got = _script(True, exemplar_filter, temporality, monkeypatch)
        fast_warnings = [r.getMessage() for r in caplog.records]
    assert got == expected
    assert fast_warnings == sdk_warnings  # negative/non-finite values: the SDK's own warnings
    assert any("non-negative" in line for line in sdk_warnings)
    exemplars = str(expected).count("('Exemplar',")
    assert (exemplars > 10) if exemplar_filter != "always_off" else exemplars == 0  # compared too


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_histogram, "MEMO_LIMIT", 10)
    provider, _ = _provider("trace_based", None)
    histogram = FastHistogram(provider.get_meter("m").create_histogram("h"))
    for index in range(100):
        histogram.record(1.0, {"i": index})
        histogram.record(1.0, {"i": index})
        assert 0 < len(histogram._memo) <= 10
    provider.shutdown()


def test_recording_while_collecting_loses_nothing() -> None:
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: a recording without the lock would lose counts
    try:
        _record_while_collecting()
    finally:
        sys.setswitchinterval(switch)


def _record_while_collecting() -> None:
    provider, (cumulative, delta) = _provider("always_off", None)
    histogram = FastHistogram(provider.get_meter("m").create_histogram("h"))
    sets = [{"k": str(index)} for index in range(8)]
    threads, per_thread, done = 4, 3000, threading.Event()
    seen: list[int] = []

    def record() -> None:
        for step in range(per_thread):
            histogram.record(0.5 + step % 3, sets[step % len(sets)])

    def collect_once() -> None:
        data = delta.get_metrics_data()
        if data is not None:
            seen.extend(point.count for rm in data.resource_metrics for sm in rm.scope_metrics
                        for metric in sm.metrics for point in metric.data.data_points)

    def collect() -> None:
        while not done.is_set():
            collect_once()

    collector = threading.Thread(target=collect)
    collector.start()
    workers = [threading.Thread(target=record) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    collector.join()
    collect_once()  # the rest
    assert len(seen) > len(sets)  # collections did run while recording
    final = cumulative.get_metrics_data()
    assert final is not None
    points = [point for rm in final.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
              for point in metric.data.data_points]
    assert sum(p.count for p in points) == sum(seen) == threads * per_thread
    assert sum(p.sum for p in points) == threads * sum(0.5 + step % 3 for step in range(per_thread))
    provider.shutdown()


def test_the_probe_passes_and_otel_crm_wraps_the_sdk_histograms() -> None:
    assert fast_histogram._same_data()
    provider, _ = _provider("trace_based", None)
    instrument = provider.get_meter("m").create_histogram("h")
    wrapped = fast_histogram.fast_histogram(instrument)
    assert isinstance(wrapped, FastHistogram)
    assert fast_histogram.fast_histogram(instrument) is wrapped  # one per SDK instrument
    assert fast_histogram.fast_histogram(instrument, enabled=False) is instrument
    assert (wrapped.name, wrapped.unit) == ("h", "")
    via_corrections = CorrectingMeterProvider(provider).get_meter("flask").create_histogram(
        "http.server.request.duration", unit="s", description="d")
    assert isinstance(via_corrections, FastHistogram)
    not_sdk = object()
    assert fast_histogram.fast_histogram(not_sdk) is not_sdk  # a no-op or proxy meter's: left alone
    provider.shutdown()


def test_otel_crm_fast_spans_false_keeps_the_sdks_histograms() -> None:
    from otel_crm._internal.runtime import Runtime, clear_current_runtime, set_current_runtime
    from otel_crm._internal.settings import resolve_settings

    provider, _ = _provider("trace_based", None)
    set_current_runtime(Runtime(settings=resolve_settings({}, fast_spans=False)))
    try:
        plain = CorrectingMeterProvider(provider).get_meter("flask").create_histogram(
            "http.server.request.duration", unit="s", description="d")
        assert not isinstance(plain, FastHistogram)
        assert not isinstance(red.RedMetricsProcessor(provider.get_meter("crm"), fast=False)._duration,
                              FastHistogram)
        assert isinstance(red.RedMetricsProcessor(provider.get_meter("crm2"))._duration, FastHistogram)
    finally:
        clear_current_runtime()
        provider.shutdown()


def test_a_broken_fast_path_fails_the_probe_and_the_sdk_path_is_used_with_one_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken_add(self: FastHistogram, entry: Any, value: float, context: Context) -> None:
        for aggregation in entry.histograms:  # the bucket only: no sum, min, max nor exemplar
            with aggregation._lock:
                if aggregation._value is None:
                    aggregation._value = aggregation._get_empty_bucket_counts()
                aggregation._value[0] += 1

    monkeypatch.setattr(FastHistogram, "_add", broken_add)
    monkeypatch.setattr(fast_histogram, "_checked", [])
    monkeypatch.setattr(sdk_compat, "_warned", set())
    provider, _ = _provider("trace_based", None)
    instrument = provider.get_meter("m").create_histogram("h")
    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        assert fast_histogram.fast_histogram(instrument) is instrument
        assert fast_histogram.fast_histogram(instrument) is instrument
    lines = [r.getMessage() for r in caplog.records if "histogram path" in r.getMessage()]
    assert len(lines) == 1
    provider.shutdown()


# --- RED's duration histogram, through the cardinality guard -----------------------------------------

def _red_script(fast: bool, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    provider, readers = _provider("trace_based", None)
    guard = CardinalityGuard({"crm.operation.name": 5, "crm.tenant.id": 3})
    processor = red.RedMetricsProcessor(provider.get_meter("otel_crm"), guard, fast=fast)
    assert isinstance(processor._duration, FastHistogram) is fast
    rng = random.Random(3)
    late = InMemoryMetricReader(preferred_temporality=_DELTA)
    for index in range(600):
        failed = rng.random() < 0.1
        start = 1_000_000 * index
        span = ReadableSpan(
            f"GET /r{rng.randrange(9)}", context=SpanContext(1 + index, 2, False, TraceFlags(index % 2)),
            kind=SpanKind.SERVER, start_time=start, end_time=start + rng.randrange(1, 3_000_000_000),
            attributes={"http.request.method": "GET", "http.route": f"/r{rng.randrange(9)}",
                        "http.response.status_code": 500 if failed else 200,
                        "crm.tenant.id": f"t{rng.randrange(6)}"},  # beyond the budgets: __other__
            status=Status(StatusCode.ERROR if failed else StatusCode.UNSET))
        with trace.use_span(NonRecordingSpan(span.context)):  # exemplars (sampled spans) name it
            processor.on_end(span)
        if index == 250:
            provider.add_metric_reader(late)  # the storage map changes: each row's entry is resolved again
            readers.append(late)
        if index == 400:
            sdk_compat.restart_metrics_after_fork(provider)
    made = [comparable(reader.get_metrics_data()) for reader in readers]
    provider.shutdown()
    monkeypatch.undo()
    if fast:  # the rows' own entries were used (RedMetricsProcessor._record: record_fixed)
        assert all(row[3] is not None for row in processor._rows.values())
    return made


def test_red_records_the_same_durations_through_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _red_script(False, monkeypatch)
    got = _red_script(True, monkeypatch)
    assert got == expected
    assert "__other__" in str(expected)  # the cardinality guard's overflow was recorded too


def test_a_meter_disabled_at_run_time_records_nothing_as_the_sdks() -> None:
    from opentelemetry.sdk.metrics._internal import _default_meter_configurator, _disable_meter_configurator

    made = []
    for fast in (False, True):
        provider, (reader, _) = _provider("trace_based", None)
        histogram = provider.get_meter("m").create_histogram("h")
        if fast:
            histogram = FastHistogram(histogram)
        histogram.record(1.0, {"k": "v"})
        provider._set_meter_configurator(meter_configurator=_disable_meter_configurator)
        histogram.record(2.0, {"k": "v"})
        histogram.record(4.0, {"k": "w"})
        provider._set_meter_configurator(meter_configurator=_default_meter_configurator)
        histogram.record(8.0, {"k": "v"})
        made.append(comparable(reader.get_metrics_data()))
        provider.shutdown()
    assert made[0] == made[1]
    assert "('float', 9.0)" in str(made[0])  # 1 + 8: the disabled meter's recordings were dropped


def _fixed_script(fixed: bool) -> list[Any]:
    """The same recordings through `record` and through `record_fixed` (one entry kept per dict)."""
    provider, readers = _provider("always_on", None)
    histogram = FastHistogram(provider.get_meter("m").create_histogram("h", "s"))
    sets = [{"k": "v", "n": 1}, {"flag": True}, {"flag": 1}, {"flag": 1.0}, {}, {"seq": (1, 2)}]
    entries: list[Any] = [None] * len(sets)
    late = InMemoryMetricReader(preferred_temporality=_DELTA)
    rng = random.Random(5)
    values = _values(rng)
    for step in range(400):
        which = rng.randrange(len(sets))
        value = next(values)
        with trace.use_span(NonRecordingSpan(SpanContext(7, 1 + step, False, TraceFlags(step % 2)))):
            if fixed:
                entries[which] = histogram.record_fixed(value, sets[which], entries[which])
            else:
                histogram.record(value, sets[which])
        if step == 150:
            provider.add_metric_reader(late)
            readers.append(late)
        if step == 250:
            sdk_compat.restart_metrics_after_fork(provider)
    made = [comparable(reader.get_metrics_data()) for reader in readers]
    provider.shutdown()
    if fixed:  # plain sets keep an entry; the tuple-valued one always takes the SDK's path
        assert [entry is not None for entry in entries] == [True] * 5 + [False]
    return made


def test_record_fixed_collects_what_record_collects() -> None:
    assert _fixed_script(True) == _fixed_script(False)
