"""The in-process tail sampler: decisions through the processor, boundaries, late spans, bounds, partial
traces, self-metrics, flush, fork."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import random
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision as SdkDecision
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from otel_crm._internal import safety, semconv
from otel_crm._internal.sampling import SamplingPolicy, TailSamplingProcessor

S = 1_000_000_000  # ns per second
BOUND = round(0.1 * 2**64)  # TraceIdRatioBased(0.1)'s bound
KEEP_ID = (0xABC << 64) | (BOUND - 1)  # kept by the 10% ratio (low 64 bits just under the bound)
DROP_ID = (0xABC << 64) | BOUND  # dropped by it (exactly the bound)
T0 = 1_700_000_000 * S


class Ids(IdGenerator):
    """Trace ids from a queue (random once empty); span ids random."""

    def __init__(self) -> None:
        self.next: list[int] = []
        self._random = random.Random(7)

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self.next.pop(0) if self.next else (self._random.getrandbits(128) or 1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, ratio: float = 0.1, *, keep_all: bool = False, **bounds: Any) -> None:
        self.ids = Ids()
        self.clock = Clock()
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        limits = {"max_traces": 100, "max_spans_per_trace": 100, "max_spans": 1000,
                  "max_trace_age_s": 60.0} | bounds
        self.processor = TailSamplingProcessor(
            SimpleSpanProcessor(self.exporter), SamplingPolicy(ratio=ratio, keep_all=keep_all),
            meter=self.meter_provider.get_meter("test"), clock=self.clock, **limits)
        self.provider = TracerProvider(id_generator=self.ids, shutdown_on_exit=False)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("test")

    def names(self) -> list[str]:
        return sorted(span.name for span in self.exporter.get_finished_spans())

    def exported(self) -> dict[str, ReadableSpan]:
        return {span.name: span for span in self.exporter.get_finished_spans()}

    def trace(self, trace_id: int, *, seconds: float = 0.01, children: int = 1, error: bool = False) -> None:
        self.ids.next.append(trace_id)
        root = self.tracer.start_span("root", start_time=T0)
        ctx = trace.set_span_in_context(root)
        for i in range(children):
            child = self.tracer.start_span(f"child{i}", context=ctx, start_time=T0)
            if error and i == 0:
                child.set_status(Status(StatusCode.ERROR))
            child.end(end_time=T0 + 1000)
        root.end(end_time=T0 + round(seconds * S))

    def metric(self, name: str) -> dict[tuple[tuple[str, Any], ...], int]:
        data = self.reader.get_metrics_data()
        out: dict[tuple[tuple[str, Any], ...], int] = {}
        for resource_metrics in data.resource_metrics if data else ():
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            out[tuple(sorted((point.attributes or {}).items()))] = point.value  # type: ignore[union-attr]
        return out


def remote_context(trace_id: int) -> Any:
    parent = SpanContext(trace_id, 0x1234, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


R = semconv.CRM_SAMPLING_REASON


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    yield rig
    rig.provider.shutdown()


# --- rules through the processor -------------------------------------------------------------------

def test_slow_boundary_exactly_two_seconds_is_kept(rig: Rig) -> None:
    rig.trace(DROP_ID, seconds=2.0)
    assert rig.names() == ["child0", "root"]
    assert {span.attributes[R] for span in rig.exporter.get_finished_spans()} == {"slow"}  # type: ignore[index]
    rig.exporter.clear()
    rig.trace(DROP_ID + 1, seconds=1.999)  # ratio drops this id too
    assert rig.names() == []
    rig.trace(KEEP_ID, seconds=1.999)  # but keeps this one
    assert {span.attributes[R] for span in rig.exporter.get_finished_spans()} == {"ratio"}  # type: ignore[index]


def test_ratio_zero_and_one() -> None:
    zero, one = Rig(ratio=0.0), Rig(ratio=1.0)
    for trace_id in (1, KEEP_ID, 2**128 - 1):
        zero.trace(trace_id)
        one.trace(trace_id)
    assert zero.names() == []
    assert len(one.names()) == 6
    assert {s.attributes[semconv.CRM_SAMPLING_WEIGHT] for s in one.exporter.get_finished_spans()} == {1.0}  # type: ignore[index]


def test_keep_all_marks_reason_all() -> None:
    rig = Rig(keep_all=True)
    rig.trace(DROP_ID)
    assert {s.attributes[R] for s in rig.exporter.get_finished_spans()} == {"all"}  # type: ignore[index]


def test_error_status_keeps_the_whole_trace(rig: Rig) -> None:
    rig.trace(DROP_ID, children=3, error=True)
    assert rig.names() == ["child0", "child1", "child2", "root"]
    spans = rig.exporter.get_finished_spans()
    assert {s.attributes[R] for s in spans} == {"error"}  # type: ignore[index]
    assert {s.attributes[semconv.CRM_SAMPLING_WEIGHT] for s in spans} == {1.0}  # type: ignore[index]


def test_exception_event_without_error_status_keeps(rig: Rig) -> None:
    rig.ids.next.append(DROP_ID)
    with rig.tracer.start_as_current_span("root"):
        with pytest.raises(KeyError), rig.tracer.start_as_current_span(
                "child", record_exception=True, set_status_on_exception=False) as child:
            raise KeyError("x")
    assert child.status.status_code is StatusCode.UNSET  # type: ignore[attr-defined]
    assert rig.names() == ["child", "root"]
    assert rig.exported()["root"].attributes[R] == "error"  # type: ignore[index]


def test_kept_spans_carry_reason_weight_and_keep_their_attributes(rig: Rig) -> None:
    rig.ids.next.append(KEEP_ID)
    with rig.tracer.start_as_current_span("root", attributes={"a": 1, "b": ("x", "y")}):
        pass
    root = rig.exported()["root"]
    assert dict(root.attributes or {}) == {"a": 1, "b": ("x", "y"), R: "ratio",
                                           semconv.CRM_SAMPLING_WEIGHT: 10.0}
    assert root.dropped_attributes == 0
    assert root.context.trace_id == KEEP_ID  # type: ignore[union-attr]
    assert root.end_time is not None
    assert root.name == "root"
    assert root.resource is not None


def test_dropped_attribute_count_survives_the_copy() -> None:
    from opentelemetry.sdk.trace import SpanLimits

    rig = Rig()
    rig.provider = TracerProvider(id_generator=rig.ids, span_limits=SpanLimits(max_span_attributes=1),
                                  shutdown_on_exit=False)
    rig.provider.add_span_processor(rig.processor)
    rig.ids.next.append(KEEP_ID)
    rig.provider.get_tracer("t").start_span("root", attributes={"a": 1, "b": 2}).end()
    assert rig.exported()["root"].dropped_attributes == 1


def test_nested_spans_are_held_until_the_root_ends(rig: Rig) -> None:
    rig.ids.next.append(KEEP_ID)
    with rig.tracer.start_as_current_span("root"):
        with rig.tracer.start_as_current_span("a"):
            with rig.tracer.start_as_current_span("b"):
                pass
        assert rig.names() == []
    assert rig.names() == ["a", "b", "root"]


async def test_asyncio_tasks() -> None:
    rig = Rig()

    async def work(i: int) -> None:
        with rig.tracer.start_as_current_span(f"task{i}"):
            await asyncio.sleep(0)
            with rig.tracer.start_as_current_span(f"inner{i}"):
                await asyncio.sleep(0)

    rig.ids.next += [KEEP_ID, DROP_ID]
    for _ in range(2):
        with rig.tracer.start_as_current_span("root"):
            await asyncio.gather(*(work(i) for i in range(3)))
    spans = rig.exporter.get_finished_spans()
    assert len(spans) == 7
    assert {s.context.trace_id for s in spans} == {KEEP_ID}  # type: ignore[union-attr]


def test_threads_that_copy_context() -> None:
    rig = Rig()
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()
        with rig.tracer.start_as_current_span(f"t{i}"):
            pass

    rig.ids.next += [KEEP_ID, DROP_ID]
    for _ in range(2):
        with rig.tracer.start_as_current_span("root"):
            threads = [threading.Thread(target=contextvars.copy_context().run, args=(work, i))
                       for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    spans = rig.exporter.get_finished_spans()
    assert len(spans) == 9
    assert {s.context.trace_id for s in spans} == {KEEP_ID}  # type: ignore[union-attr]
    assert rig.processor.stats()["buffer_spans"] == 0


def test_many_threads_many_traces_leave_nothing_behind() -> None:
    rig = Rig(ratio=0.5, max_traces=10_000, max_spans=100_000)

    def work() -> None:
        for _ in range(200):
            with rig.tracer.start_as_current_span("root"):
                with rig.tracer.start_as_current_span("child"):
                    pass

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = rig.processor.stats()
    assert stats["buffer_traces"] == stats["buffer_spans"] == 0
    assert sum(stats["traces"].values()) == 1600
    assert stats["spans"]["kept"] + stats["spans"]["dropped"] == 3200
    assert len(rig.exporter.get_finished_spans()) == stats["spans"]["kept"]
    for span in rig.exporter.get_finished_spans():  # both spans of a trace or none
        assert span.context.trace_id & (2**64 - 1) < 2**63  # type: ignore[union-attr]


def test_remote_parent_traces_are_buffered_and_decided(rig: Rig) -> None:
    for trace_id, name in ((KEEP_ID, "kept"), (DROP_ID, "dropped")):
        with rig.tracer.start_as_current_span(name, context=remote_context(trace_id)):
            with rig.tracer.start_as_current_span(name + ".child"):
                pass
            assert rig.names() == ([] if name == "kept" else ["kept", "kept.child"])
    assert rig.names() == ["kept", "kept.child"]
    assert rig.exported()["kept"].attributes[R] == "ratio"  # type: ignore[index]


def test_remote_parent_slow_root(rig: Rig) -> None:
    span = rig.tracer.start_span("server", context=remote_context(DROP_ID), start_time=T0)
    span.end(end_time=T0 + 2 * S)
    assert rig.exported()["server"].attributes[R] == "slow"  # type: ignore[index]


def test_several_local_roots_share_one_count(rig: Rig) -> None:
    first = rig.tracer.start_span("first", context=remote_context(DROP_ID))
    second = rig.tracer.start_span("second", context=remote_context(DROP_ID))
    first.end()
    assert rig.processor.stats()["buffer_traces"] == 1
    second.set_status(Status(StatusCode.ERROR))
    second.end()
    assert rig.names() == ["first", "second"]


def test_child_ending_after_its_root_is_waited_for(rig: Rig) -> None:
    for trace_id in (KEEP_ID, DROP_ID):
        rig.ids.next.append(trace_id)
        root = rig.tracer.start_span("root")
        child = rig.tracer.start_span("child", context=trace.set_span_in_context(root))
        root.end()
        assert rig.names() == ([] if trace_id == KEEP_ID else ["child", "root"])
        child.end()
    assert rig.names() == ["child", "root"]


def test_span_started_after_the_decision_follows_it(rig: Rig) -> None:
    contexts = {}
    for trace_id in (KEEP_ID, DROP_ID):
        rig.ids.next.append(trace_id)
        with rig.tracer.start_as_current_span("root") as root:
            contexts[trace_id] = trace.set_span_in_context(root)
    rig.exporter.clear()
    for trace_id, context in contexts.items():
        late = rig.tracer.start_span("late", context=context)
        if trace_id == DROP_ID:
            late.set_status(Status(StatusCode.ERROR))  # a late error does not leak a dropped trace
        late.end()
    assert rig.names() == ["late"]
    late_span = rig.exported()["late"]
    assert late_span.context.trace_id == KEEP_ID  # type: ignore[union-attr]
    assert late_span.attributes[R] == "ratio"  # type: ignore[index]
    assert rig.processor.stats()["buffer_traces"] == 0


def test_new_local_root_of_a_dropped_trace_is_decided_afresh(rig: Rig) -> None:
    with rig.tracer.start_as_current_span("first", context=remote_context(DROP_ID)):
        pass
    with rig.tracer.start_as_current_span("again", context=remote_context(DROP_ID)) as again:
        again.set_status(Status(StatusCode.ERROR))
    assert rig.names() == ["again"]


def test_forgotten_decision_drops_late_span_with_a_count() -> None:
    rig = Rig(decision_cache_size=1)
    rig.ids.next += [KEEP_ID, KEEP_ID - 1]
    root = rig.tracer.start_span("root")
    child = rig.tracer.start_span("late", context=trace.set_span_in_context(root))
    rig.processor.force_flush()  # decides KEEP_ID with the child still open
    with rig.tracer.start_as_current_span("other"):  # its decision overwrites KEEP_ID's
        pass
    root.end()
    child.end()
    assert rig.names() == ["other"]
    assert rig.metric(semconv.CRM_SAMPLER_EVICTIONS) == {((R, "late_unknown"),): 2}


def test_unsampled_spans_are_ignored() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    rig = Rig()
    rig.provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    rig.provider.add_span_processor(rig.processor)
    with rig.provider.get_tracer("t").start_as_current_span("x"):
        pass
    assert rig.processor.stats()["buffer_traces"] == 0


# --- bounds and self-metrics -----------------------------------------------------------------------

def test_max_traces_forces_the_oldest() -> None:
    rig = Rig(ratio=0.0, max_traces=2)
    roots = []
    for trace_id in (DROP_ID, DROP_ID + 1, DROP_ID + 2):
        rig.ids.next.append(trace_id)
        root = rig.tracer.start_span(f"root{len(roots)}")
        child = rig.tracer.start_span("child", context=trace.set_span_in_context(root))
        child.set_status(Status(StatusCode.ERROR if trace_id == DROP_ID else StatusCode.UNSET))
        child.end()
        roots.append(root)
    # the oldest (the errored one) was forced to a decision with what it had: kept for its error
    assert rig.names() == ["child"]
    assert rig.exported()["child"].attributes[R] == "error"  # type: ignore[index]
    assert rig.processor.stats()["buffer_traces"] == 2
    roots[0].end()  # a late root follows the decision
    assert rig.names() == ["child", "root0"]
    for root in roots[1:]:
        root.end()
    assert rig.metric(semconv.CRM_SAMPLER_EVICTIONS) == {((R, "max_traces"),): 1}
    assert rig.metric(semconv.CRM_SAMPLER_TRACES) == {((R, "error"),): 1, ((R, "dropped"),): 2}
    assert rig.metric(semconv.CRM_SAMPLER_SPANS) == {
        ((semconv.CRM_SAMPLING_DECISION, "kept"),): 2, ((semconv.CRM_SAMPLING_DECISION, "dropped"),): 4}
    assert rig.metric(semconv.CRM_SAMPLER_BUFFER_TRACES) == {(): 0}
    assert rig.metric(semconv.CRM_SAMPLER_BUFFER_SPANS) == {(): 0}


def test_max_spans_per_trace_decides_early_then_spans_follow() -> None:
    rig = Rig(max_spans_per_trace=3)
    for trace_id in (KEEP_ID, DROP_ID):
        rig.ids.next.append(trace_id)
        with rig.tracer.start_as_current_span(f"root{trace_id == KEEP_ID}"):
            for i in range(5):
                with rig.tracer.start_as_current_span(f"c{i}.{trace_id == KEEP_ID}"):
                    pass
    assert rig.names() == ["c0.True", "c1.True", "c2.True", "c3.True", "c4.True", "rootTrue"]
    # kept trace: one early decision; dropped one: the early decision, then its watched rest (root
    # still running) reaches the bound again and is dropped again (no error, no slow root)
    assert rig.metric(semconv.CRM_SAMPLER_EVICTIONS) == {((R, "max_spans_per_trace"),): 3}
    assert rig.processor.stats()["partial"] == {}
    assert rig.processor.stats()["buffer_spans"] == 0


def test_max_spans_bounds_memory_evicting_oldest_traces() -> None:
    rig = Rig(ratio=0.0, max_spans=10, max_traces=1000)
    roots = []
    for i in range(20):  # never-ending roots, each with two ended children
        root = rig.tracer.start_span(f"root{i}")
        for _ in range(2):
            rig.tracer.start_span("child", context=trace.set_span_in_context(root)).end()
        roots.append(root)
        assert rig.processor.stats()["buffer_spans"] <= 10
    evictions = rig.metric(semconv.CRM_SAMPLER_EVICTIONS)
    assert evictions[((R, "max_spans"),)] >= 16
    assert rig.processor.stats()["buffer_traces"] <= 4
    assert rig.names() == []


def test_max_age_with_injected_clock() -> None:
    rig = Rig(ratio=0.0, max_trace_age_s=10.0)
    rig.ids.next.append(DROP_ID)
    old_root = rig.tracer.start_span("old")
    child = rig.tracer.start_span("child", context=trace.set_span_in_context(old_root))
    child.set_status(Status(StatusCode.ERROR))
    child.end()
    rig.clock.now += 5
    with rig.tracer.start_as_current_span("young"):
        pass
    assert rig.processor.stats()["buffer_traces"] == 1
    rig.clock.now += 5.5  # old is now 10.5 s old
    with rig.tracer.start_as_current_span("trigger"):
        pass
    assert rig.names() == ["child"]
    assert rig.metric(semconv.CRM_SAMPLER_EVICTIONS) == {((R, "max_age"),): 1}
    assert rig.processor.stats()["buffer_traces"] == 0
    old_root.end()
    assert rig.names() == ["child", "old"]


def test_max_age_is_also_checked_at_flush() -> None:
    rig = Rig(ratio=0.0, max_trace_age_s=1.0)
    root = rig.tracer.start_span("root")
    rig.tracer.start_span("child", context=trace.set_span_in_context(root)).end()
    rig.clock.now += 2
    rig.processor.force_flush()
    assert rig.metric(semconv.CRM_SAMPLER_EVICTIONS) == {((R, "max_age"),): 1}


def test_keep_rate_is_ten_percent_over_twenty_thousand_random_traces() -> None:
    rig = Rig(max_traces=10)
    rng = random.Random(42)
    ids = [rng.getrandbits(128) for _ in range(20_000)]
    rig.ids.next = list(ids)
    for _ in ids:
        with rig.tracer.start_as_current_span("root"):
            pass
    kept = {span.context.trace_id for span in rig.exporter.get_finished_spans()}  # type: ignore[union-attr]
    assert abs(len(kept) / 20_000 - 0.1) <= 0.015
    sdk = TraceIdRatioBased(0.1)
    expected = {i for i in ids
                if sdk.should_sample(None, i, "root").decision is SdkDecision.RECORD_AND_SAMPLE}
    assert kept == expected
    traces = rig.metric(semconv.CRM_SAMPLER_TRACES)
    assert traces == {((R, "ratio"),): len(kept), ((R, "dropped"),): 20_000 - len(kept)}


# --- flush, shutdown, failures, fork -----------------------------------------------------------------

def test_force_flush_decides_buffered_traces_instead_of_dropping(rig: Rig) -> None:
    for trace_id in (KEEP_ID, DROP_ID):
        rig.ids.next.append(trace_id)
        root = rig.tracer.start_span(f"root{trace_id == KEEP_ID}")
        rig.tracer.start_span(f"child{trace_id == KEEP_ID}", context=trace.set_span_in_context(root)).end()
    assert rig.names() == []
    assert rig.processor.force_flush()
    assert rig.names() == ["childTrue"]
    assert rig.processor.stats()["buffer_traces"] == 0


def test_shutdown_decides_buffered_traces_then_shuts_downstream() -> None:
    rig = Rig()
    rig.ids.next.append(DROP_ID)
    root = rig.tracer.start_span("root")
    child = rig.tracer.start_span("child", context=trace.set_span_in_context(root))
    child.set_status(Status(StatusCode.ERROR))
    child.end()
    rig.provider.shutdown()
    assert rig.names() == ["child"]
    root.end()  # after shutdown: ignored, nothing raised
    assert rig.names() == ["child"]
    rig.processor.shutdown()  # idempotent


def test_internal_error_never_reaches_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig()

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("sampler bug")

    monkeypatch.setattr(rig.processor, "_force", broken)
    with pytest.raises(RuntimeError, match="sampler bug"):  # re-raised under pytest, by design
        with rig.tracer.start_as_current_span("root"):
            pass
    safety.reraise_internal_errors(False)
    try:
        with rig.tracer.start_as_current_span("root"):
            pass
    finally:
        safety.reraise_internal_errors(None)


def test_processor_can_be_garbage_collected() -> None:
    rig = Rig()
    ref = weakref.ref(rig.processor)
    rig.trace(KEEP_ID)
    del rig
    gc.collect()
    assert ref() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_starts_with_an_empty_buffer() -> None:
    code = textwrap.dedent("""
        import os
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from otel_crm._internal.sampling import SamplingPolicy, TailSamplingProcessor
        exporter = InMemorySpanExporter()
        processor = TailSamplingProcessor(SimpleSpanProcessor(exporter), SamplingPolicy(ratio=1.0),
            max_traces=10, max_spans_per_trace=10, max_spans=100, max_trace_age_s=60)
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("t")
        root = tracer.start_span("root")
        tracer.start_span("child", context=trace.set_span_in_context(root)).end()
        pid = os.fork()
        if pid == 0:
            ok = processor.stats()["buffer_spans"] == 0
            with tracer.start_as_current_span("in-child"):
                pass
            ok = ok and [s.name for s in exporter.get_finished_spans()] == ["in-child"]
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "child saw the parent's buffer"
        assert processor.stats()["buffer_spans"] == 2
        root.end()
        assert sorted(s.name for s in exporter.get_finished_spans()) == ["child", "root"]
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_portable_path_without_sdk_internals_gives_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_crm._internal.sampling import tail

    assert tail._FAST  # this SDK's internals are what the hot path expects
    monkeypatch.setattr(tail, "_FAST", False)
    rig = Rig()
    rig.trace(DROP_ID, seconds=2.0)  # slow
    rig.trace(DROP_ID + 1, error=True)  # error
    rig.trace(DROP_ID + 2)  # dropped
    rig.trace(KEEP_ID)  # ratio
    rig.ids.next.append(DROP_ID + 3)
    with rig.tracer.start_as_current_span("root"):  # exception event only
        child = rig.tracer.start_span("child")
        child.add_event("exception")
        child.end()
    with rig.tracer.start_as_current_span("server", context=remote_context(DROP_ID + 4)):
        pass  # remote parent, dropped
    reasons = sorted(str(s.attributes[R]) for s in rig.exporter.get_finished_spans())  # type: ignore[index]
    assert reasons == ["error"] * 4 + ["ratio", "ratio", "slow", "slow"]
    assert rig.processor.stats()["traces"] == {"slow": 1, "error": 2, "dropped": 2, "ratio": 1}


# --- rules through the processor ----------------------------------------------------------------------

def ruled_rig(rules: list[dict[str, Any]], ratio: float = 0.1, **bounds: Any) -> Rig:
    from opentelemetry.sdk.resources import Resource

    from otel_crm._internal.sampling import compile_rules

    rig = Rig(ratio=ratio, **bounds)
    policy = SamplingPolicy(ratio=ratio, rules=compile_rules(rules)[0])
    limits = {"max_traces": 100, "max_spans_per_trace": 100, "max_spans": 1000, "max_trace_age_s": 60.0} | bounds
    rig.processor = TailSamplingProcessor(SimpleSpanProcessor(rig.exporter), policy, clock=rig.clock,
                                          meter=rig.meter_provider.get_meter("ruled"), **limits)
    rig.provider = TracerProvider(id_generator=rig.ids, shutdown_on_exit=False,
                                  resource=Resource({"service.name": "crm-api"}))
    rig.provider.add_span_processor(rig.processor)
    rig.tracer = rig.provider.get_tracer("test")
    return rig


def request(rig: Rig, trace_id: int, route: str, *, tenant: str | None = None, error: bool = False,
            context: Any = None) -> None:
    rig.ids.next.append(trace_id)
    with rig.tracer.start_as_current_span("GET", context=context, kind=trace.SpanKind.SERVER,
                                          attributes={"http.request.method": "GET"}) as server:
        if tenant:
            server.set_attribute("crm.tenant.id", tenant)
        with rig.tracer.start_as_current_span("SELECT") as child:
            if error:
                child.set_status(Status(StatusCode.ERROR))
        server.set_attribute("http.route", route)  # routing happens after the span starts
        server.update_name(f"GET {route}")


def test_rules_see_the_entry_span_as_it_is_when_the_trace_is_decided() -> None:
    rig = ruled_rig([{"name": "health", "route": "/health*", "ratio": 0, "errors": False},
                     {"name": "vip", "tenant": "vip-*", "method": "get", "ratio": 1},
                     {"name": "ops", "operation": "GET /ops/*", "service": "crm-api", "ratio": 1}])
    request(rig, KEEP_ID, "/health")  # the default ratio would keep this id
    request(rig, DROP_ID, "/health", error=True)
    request(rig, DROP_ID + 1, "/leads", tenant="vip-acme")
    request(rig, DROP_ID + 2, "/ops/stats")
    request(rig, DROP_ID + 3, "/leads", tenant="acme")
    request(rig, KEEP_ID - 1, "/leads", tenant="acme")
    spans = rig.exporter.get_finished_spans()
    by_trace = {(s.context.trace_id, s.name): dict(s.attributes or {}) for s in spans}  # type: ignore[union-attr]
    assert {t for t, _ in by_trace} == {DROP_ID + 1, DROP_ID + 2, KEEP_ID - 1}
    vip = by_trace[(DROP_ID + 1, "SELECT")]
    assert (vip[R], vip[semconv.CRM_SAMPLING_RULE], vip[semconv.CRM_SAMPLING_WEIGHT]) == ("ratio", "vip", 1.0)
    assert by_trace[(DROP_ID + 2, "GET /ops/stats")][semconv.CRM_SAMPLING_RULE] == "ops"
    assert semconv.CRM_SAMPLING_RULE not in by_trace[(KEEP_ID - 1, "GET /leads")], "no rule matched"
    assert all(semconv.CRM_SAMPLING_PARTIAL not in a for a in by_trace.values())
    assert rig.processor.stats()["traces"] == {"dropped": 3, "ratio": 3}


def test_a_remote_parent_entry_is_matched_too() -> None:
    rig = ruled_rig([{"name": "vip", "tenant": "vip-*", "ratio": 1}])
    request(rig, DROP_ID, "/x", tenant="vip-1", context=remote_context(DROP_ID))
    assert {s.attributes[semconv.CRM_SAMPLING_RULE] for s in rig.exporter.get_finished_spans()} == {"vip"}  # type: ignore[index]


# --- long traces: partial keeps --------------------------------------------------------------------------

def long_trace(rig: Rig, trace_id: int, children: int, *, error_at: int | None = None,
               seconds: float = 0.01) -> None:
    rig.ids.next.append(trace_id)
    root = rig.tracer.start_span("root", start_time=T0)
    ctx = trace.set_span_in_context(root)
    for i in range(children):
        child = rig.tracer.start_span(f"c{i}", context=ctx, start_time=T0)
        if i == error_at:
            child.set_status(Status(StatusCode.ERROR))
        child.end(end_time=T0 + 1000)
    root.end(end_time=T0 + round(seconds * S))


@pytest.mark.parametrize(("error_at", "seconds", "reason", "first"), [(6, 0.01, "error", 4), (None, 9.0, "slow", 8)])
def test_a_later_error_or_slow_root_keeps_what_is_left_of_a_trace_dropped_early(
        error_at: int | None, seconds: float, reason: str, first: int) -> None:
    rig = Rig(ratio=0.0, max_spans_per_trace=5)
    long_trace(rig, DROP_ID, 12, error_at=error_at, seconds=seconds)
    spans = rig.exported()
    # Dropped early at c4's start (root + c0..c3 tracked): c0..c3 are gone. The rest is watched in
    # windows of the same bound: an error keeps its window and everything after it; a slow root is
    # known only at its end, so only the last window (c8..c11) and the root are left to keep.
    assert sorted(spans) == sorted([f"c{i}" for i in range(first, 12)] + ["root"])
    assert {(s.attributes[R], s.attributes[semconv.CRM_SAMPLING_PARTIAL]) for s in spans.values()} == {  # type: ignore[index]
        (reason, True)}
    assert rig.processor.stats()["partial"] == {reason: 1}
    assert rig.metric(semconv.CRM_SAMPLER_PARTIAL_TRACES) == {((R, reason),): 1}
    assert rig.processor.stats()["traces"] == {"dropped": 1}, "the trace's own decision, counted once"
    assert rig.processor.decision_for(DROP_ID) is True
    assert rig.processor.stats()["buffer_spans"] == 0


def test_the_rest_of_an_ok_trace_dropped_early_is_dropped_and_late_spans_follow() -> None:
    rig = Rig(ratio=0.0, max_spans_per_trace=5)
    long_trace(rig, DROP_ID, 30)
    assert rig.names() == []
    assert rig.processor.stats()["partial"] == {}
    assert rig.processor.stats()["buffer_spans"] == rig.processor.stats()["buffer_traces"] == 0
    assert rig.processor.decision_for(DROP_ID) is False


def test_a_rule_without_errors_does_not_keep_a_partial_trace_for_an_error() -> None:
    rig = ruled_rig([{"name": "batch", "operation": "root", "ratio": 0, "errors": False}], ratio=0.0,
                    max_spans_per_trace=5)
    long_trace(rig, DROP_ID, 10, error_at=8)
    assert rig.names() == []
    long_trace(rig, DROP_ID + 1, 10, seconds=9.0)
    assert {s.attributes[semconv.CRM_SAMPLING_RULE] for s in rig.exporter.get_finished_spans()} == {"batch"}  # type: ignore[index]


def test_age_bound_watches_the_rest_once_and_pressure_evictions_never() -> None:
    rig = Rig(ratio=0.0, max_trace_age_s=10.0)
    rig.ids.next.append(DROP_ID)
    root = rig.tracer.start_span("root")
    rig.tracer.start_span("early", context=trace.set_span_in_context(root)).end()
    rig.clock.now += 11
    rig.tracer.start_span("trigger").end()  # ends another trace: the age check drops DROP_ID early
    assert rig.processor.decision_for(DROP_ID) is None, "still watched: may yet be kept"
    failing = rig.tracer.start_span("late", context=trace.set_span_in_context(root))
    failing.set_status(Status(StatusCode.ERROR))
    failing.end()
    root.end()
    assert rig.names() == ["late", "root"]
    assert rig.processor.stats()["partial"] == {"error": 1}
    # a watched rest that outlives the age bound again is dropped for good (a span may never end)
    rig.ids.next.append(DROP_ID + 1)
    leaked = rig.tracer.start_span("leaked")
    for _ in range(3):
        rig.clock.now += 11
        rig.tracer.start_span("tick").end()
    assert rig.processor.stats()["buffer_traces"] == 0
    assert rig.processor.stats()["evictions"]["max_age"] == 3  # DROP_ID, then leaked twice: no more
    leaked.end()
    pressure = Rig(ratio=0.0, max_traces=1)
    pressure.ids.next += [DROP_ID, DROP_ID + 1]
    first = pressure.tracer.start_span("first")
    pressure.tracer.start_span("second").end()  # forces "first" out: memory pressure, not watched
    assert pressure.processor.decision_for(DROP_ID) is False
    first.set_status(Status(StatusCode.ERROR))
    first.end()
    assert pressure.names() == []


# --- the decision accessor --------------------------------------------------------------------------------

def test_decision_for_is_none_until_the_local_part_is_decided() -> None:
    rig = Rig(decision_cache_size=2)
    rig.ids.next.append(KEEP_ID)
    root = rig.tracer.start_span("root")
    assert rig.processor.decision_for(KEEP_ID) is None, "undecided"
    root.end()
    assert rig.processor.decision_for(KEEP_ID) is True
    rig.trace(DROP_ID)
    assert rig.processor.decision_for(DROP_ID) is False
    assert rig.processor.decision_for(12345) is None, "never seen"
    rig.trace(DROP_ID + 1)
    rig.trace(DROP_ID + 2)
    assert rig.processor.decision_for(KEEP_ID) is None, "forgotten (ring of 2)"


def test_decisions_are_remembered_for_four_times_max_traces_at_least_1024() -> None:
    def ring(max_traces: int) -> int:
        processor = TailSamplingProcessor(SimpleSpanProcessor(InMemorySpanExporter()), SamplingPolicy(),
                                          max_traces=max_traces, max_spans_per_trace=10, max_spans=100,
                                          max_trace_age_s=60)
        return len(processor._ring)

    assert (ring(10), ring(5000)) == (1024, 20000)


def test_entry_facts_read_only_the_fields_rules_use_from_live_or_plain_spans() -> None:
    from opentelemetry.sdk.resources import Resource

    from otel_crm._internal.sampling.spans import entry_facts

    attributes = {"http.route": "/x", "http.request.method": "GET", "crm.tenant.id": 42}
    plain = ReadableSpan("GET /x", attributes=attributes, resource=Resource({"service.name": "crm"}))
    live = TracerProvider(resource=Resource({"service.name": "crm"})).get_tracer("t").start_span(
        "GET /x", attributes=attributes)
    every = frozenset({"route", "method", "tenant", "operation", "service"})
    for span in (plain, live):
        facts = entry_facts(span, True, 1.5, every)
        assert (facts.route, facts.method, facts.tenant, facts.operation, facts.service) == (
            "/x", "GET", "42", "GET /x", "crm")
        assert (facts.has_error, facts.root_duration_s) == (True, 1.5)
        assert entry_facts(span, False, None, frozenset({"tenant"})).route is None, "not read: no rule uses it"
    assert entry_facts(None, True, None, every).route is None


def test_a_downstream_on_start_is_called_unless_it_is_the_batch_processors_no_op() -> None:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_crm._internal.sampling import SamplingPolicy, TailSamplingProcessor

    started: list[str] = []

    class Watching(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            started.append(span.name)

    bounds = {"max_traces": 10, "max_spans_per_trace": 10, "max_spans": 100, "max_trace_age_s": 60.0}
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(TailSamplingProcessor(Watching(), SamplingPolicy(ratio=1.0), **bounds))
    with provider.get_tracer("t").start_as_current_span("root"):
        pass
    assert started == ["root"]
    batch = BatchSpanProcessor(InMemorySpanExporter())
    try:
        assert TailSamplingProcessor(batch, SamplingPolicy(ratio=1.0), **bounds)._downstream_on_start is None
    finally:
        batch.shutdown()


def test_spans_of_another_make_with_plain_event_tuples_are_judged_too(rig: Rig) -> None:
    from opentelemetry.sdk.trace import Event

    context = SpanContext(DROP_ID, 0x77, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    span = ReadableSpan("made-elsewhere", context=context, parent=None, start_time=T0, end_time=T0 + 10,
                        events=(Event("exception"),))  # a tuple, not the SDK's BoundedList
    rig.processor.on_start(span)  # type: ignore[arg-type]
    rig.processor.on_end(span)
    assert rig.exported()["made-elsewhere"].attributes[R] == "error"  # type: ignore[index]


def test_a_long_trace_alone_is_held_to_its_age_bound_by_its_own_span_ends() -> None:
    rig = Rig(ratio=0.0, max_trace_age_s=10.0)
    rig.ids.next.append(DROP_ID)
    root = rig.tracer.start_span("root")
    context = trace.set_span_in_context(root)
    rig.tracer.start_span("first", context=context).end()
    rig.clock.now += 11
    rig.tracer.start_span("second", context=context).end()  # no other trace starts or is decided
    assert rig.metric(semconv.CRM_SAMPLER_EVICTIONS) == {((R, "max_age"),): 1}
    root.end()
