"""Single node: collector-config/otelcol.yaml in front of Jaeger v2, traces from the plain SDK.

Sends error traces, slow traces (explicit ≥ 2 s timestamps, no sleeping) and ok traces
whose collector `probabilistic` decision is computed here (FNV-1a 64 over the hash salt +
trace id, as in tailsamplingprocessor), then checks Jaeger, spanmetrics and the
collector's own decision counters.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.stack import CONFIGS, CollectorProc, JaegerProc, ids_by_decision, metric_sum, poll
from tests.e2e.traces import ChosenTraceIds, all_trace_ids, emit_trace, jaeger_parents, jaeger_span_ids, make_provider

pytestmark = pytest.mark.e2e

N_ERROR, N_SLOW, N_OK_KEPT, N_OK_DROPPED = 5, 5, 8, 32
SPANS_PER_TRACE = 3
DECISION_WAIT_S = 2


@dataclass
class Sent:
    service: str
    collector: CollectorProc
    error_ids: dict[int, dict[str, int | None]]
    slow_ids: dict[int, dict[str, int | None]]
    ok_kept: set[int]
    ok_dropped: set[int]

    @property
    def total_traces(self) -> int:
        return len(self.error_ids) + len(self.slow_ids) + len(self.ok_kept) + len(self.ok_dropped)


@pytest.fixture(scope="module")
def sent(jaeger: JaegerProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sent]:
    log_dir: Path = tmp_path_factory.mktemp("single-node")
    collector = CollectorProc(log_dir, CONFIGS / "otelcol.yaml", extra_env={
        "JAEGER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTELCOL_DECISION_WAIT": f"{DECISION_WAIT_S}s",
        "OTELCOL_SPANMETRICS_FLUSH_INTERVAL": "1s",
        "OTELCOL_BATCH_TIMEOUT": "200ms",
    }).start()
    rng = random.Random(20261123)
    service = f"crm-e2e-single-{rng.getrandbits(32):08x}"
    # error/slow traces get ids the baseline policy would DROP, so only their own policy keeps them.
    ok_kept, dropped = ids_by_decision(rng, N_OK_KEPT, N_OK_DROPPED + N_ERROR + N_SLOW)
    error_ids, slow_ids = dropped[:N_ERROR], dropped[N_ERROR:N_ERROR + N_SLOW]
    ok_dropped = dropped[N_ERROR + N_SLOW:]

    ids = ChosenTraceIds()
    provider = make_provider(service, collector.grpc_endpoint, ids)
    tracer = provider.get_tracer("e2e")
    sent_errors, sent_slow = {}, {}
    for tid in error_ids:
        ids.use(tid)
        got, parents = emit_trace(tracer, error=True)
        sent_errors[got] = parents
    for tid in slow_ids:
        ids.use(tid)
        got, parents = emit_trace(tracer, duration_s=2.5)
        sent_slow[got] = parents
    for tid in ok_kept + ok_dropped:
        ids.use(tid)
        emit_trace(tracer, duration_s=0.02)
    assert provider.force_flush(10_000)
    provider.shutdown()
    assert set(sent_errors) == set(error_ids) and set(sent_slow) == set(slow_ids)
    yield Sent(service, collector, sent_errors, sent_slow, set(ok_kept), set(ok_dropped))
    collector.stop()


def _complete(jaeger: JaegerProc, tid: int) -> dict | None:
    t = jaeger.trace(tid)
    return t if t and len(t["spans"]) == SPANS_PER_TRACE else None


def test_every_error_and_slow_trace_lands_complete_with_parent_links(sent: Sent, jaeger: JaegerProc) -> None:
    for tid, parents in {**sent.error_ids, **sent.slow_ids}.items():
        jt = poll(lambda tid=tid: _complete(jaeger, tid), 30, f"trace {tid:032x} complete in Jaeger")
        got = jaeger_parents(jt)
        ids = jaeger_span_ids(jt)
        assert got == parents, f"trace {tid:032x}: parent links {got} != sent {parents}"
        assert got["create_deal"] == ids["POST /api/deals"] and got["INSERT crm.deals"] == ids["create_deal"]
    slow = jaeger.trace(next(iter(sent.slow_ids)))
    assert slow is not None
    root = next(s for s in slow["spans"] if s["operationName"] == "POST /api/deals")
    assert root["duration"] >= 2_000_000  # µs


def test_exactly_the_predicted_ok_traces_are_kept(sent: Sent, jaeger: JaegerProc) -> None:
    for tid in sent.ok_kept:
        poll(lambda tid=tid: _complete(jaeger, tid), 30, f"predicted-kept ok trace {tid:032x}")
    # Everything was decided in the same few decision ticks; once the service's trace
    # count reaches the prediction it must stay there.
    expected = set(sent.error_ids) | set(sent.slow_ids) | sent.ok_kept
    poll(lambda: all_trace_ids(jaeger.traces(sent.service)) >= expected, 30, "all kept traces listed")
    listed = all_trace_ids(jaeger.traces(sent.service))
    assert listed == expected, (f"unexpected: {[f'{t:032x}' for t in listed - expected]}, "
                                f"missing: {[f'{t:032x}' for t in expected - listed]}")
    for tid in sent.ok_dropped:
        assert jaeger.trace(tid) is None, f"ok trace {tid:032x} should have been dropped by the baseline policy"


def test_spanmetrics_count_every_span_before_sampling(sent: Sent) -> None:
    want = sent.total_traces * SPANS_PER_TRACE

    def calls() -> float | None:
        n = metric_sum(sent.collector.exported_metrics(), "traces_span_metrics_calls_total", job=sent.service)
        return n if n == want else None

    poll(calls, 30, f"traces_span_metrics_calls_total{{job={sent.service}}} == {want}")
    samples = sent.collector.exported_metrics()
    errors = metric_sum(samples, "traces_span_metrics_calls_total", job=sent.service, status_code="STATUS_CODE_ERROR")
    assert errors == N_ERROR
    roots = metric_sum(samples, "traces_span_metrics_calls_total", job=sent.service, span_name="POST /api/deals")
    assert roots == sent.total_traces
    slow_bucket = metric_sum(samples, "traces_span_metrics_duration_seconds_bucket", job=sent.service,
                             span_name="POST /api/deals", le="2")
    assert roots - slow_bucket == N_SLOW  # only the slow roots are above 2 s


def test_collector_counts_decisions_per_policy(sent: Sent) -> None:
    name = "otelcol_processor_tail_sampling_count_traces_sampled"
    expect = {"errors": N_ERROR, "slow": N_SLOW, "baseline": N_OK_KEPT}

    def counted() -> dict[str, float] | None:
        samples = sent.collector.self_metrics()
        got = {p: metric_sum(samples, name, policy=p, sampled="true") for p in expect}
        total = sum(metric_sum(samples, name, policy="errors", sampled=s) for s in ("true", "false"))
        return got if got == expect and total == sent.total_traces else None

    poll(counted, 30, f"{name} per policy == {expect}")
    samples = sent.collector.self_metrics()
    kept = metric_sum(samples, "otelcol_processor_tail_sampling_global_count_traces_sampled", sampled="true")
    assert kept == N_ERROR + N_SLOW + N_OK_KEPT
    assert metric_sum(samples, "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early") == 0
