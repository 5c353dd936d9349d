"""The in-process tail sampler end to end: the Flask example under `opentelemetry-instrument` with its
production defaults, exporting to the real collector."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import Collector, flask_app, instrumented_env, wait_until

pytestmark = pytest.mark.integration

N_FAIL, N_SLOW, N_OK = 20, 6, 200
RATIO = 0.1


def _expected_keep(trace_id_hex: str, ratio: float = RATIO) -> bool:
    """The SDK's TraceIdRatioBased rule: the low 64 bits of the trace id under ratio x 2^64."""
    return int(trace_id_hex, 16) & (2**64 - 1) < round(ratio * 2**64)


def _access_trace_ids(output: str, path: str) -> set[str]:
    """Every request's trace id is in the JSON access log, sampled or not."""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return {line["correlation_id"] for line in lines
            if line.get("logger") == "otel_crm.access" and line.get("path") == path}


def test_errors_and_slow_traces_are_all_kept_and_ok_traces_follow_the_ratio(
        collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "sampled-crm"))  # production defaults: tail, 10%
    session = requests.Session()
    for _ in range(N_FAIL):
        assert session.get(app.url("/fail"), timeout=10).status_code == 500
    with ThreadPoolExecutor(N_SLOW) as pool:
        statuses = list(pool.map(lambda _: requests.get(app.url("/slow"), timeout=20).status_code,
                                 range(N_SLOW)))
    assert statuses == [200] * N_SLOW
    for _ in range(N_OK):
        assert session.get(app.url("/ok"), timeout=10).status_code == 200
    app.process.stop()

    # Every request's trace id is in the JSON access log, kept or not: predict the exact kept set.
    ok_ids = _access_trace_ids(app.process.output(), "/ok")
    assert len(ok_ids) == N_OK
    predicted = {t for t in ok_ids if _expected_keep(t)}

    def server_spans(route: str) -> list:  # type: ignore[type-arg]
        return [s for s in collector.spans() if s.name == f"GET {route}"]

    def all_arrived() -> bool:
        kept = {s.trace_id for s in server_spans("/ok")}
        return (len(server_spans("/fail")) == N_FAIL and len(server_spans("/slow")) == N_SLOW
                and predicted <= kept)

    # Wait for everything expected; a kept trace that should not be there still fails below.
    wait_until(all_arrived, 30, "all error, slow and ratio-kept traces in the collector output")
    failed, slow, ok = server_spans("/fail"), server_spans("/slow"), server_spans("/ok")
    assert all(s.attributes["crm.sampling.reason"] == "error" for s in failed)
    assert all(s.attributes["crm.sampling.weight"] == 1 for s in failed + slow)
    assert all(s.attributes["crm.sampling.reason"] == "slow" and s.duration_s >= 2.0 for s in slow)

    kept_ok = {s.trace_id for s in ok}
    assert kept_ok == predicted, "ok traces kept are exactly those the trace-id ratio rule keeps"
    assert all(s.attributes["crm.sampling.reason"] == "ratio" for s in ok)
    assert all(s.attributes["crm.sampling.weight"] == pytest.approx(1 / RATIO) for s in ok)
    # and the rule keeps about a tenth (binomial band, > 4.5 sigma wide)
    assert 5 <= len(kept_ok) <= 40

    # The error trace is complete: the exception event is on the server span.
    assert any(e["name"] == "exception" for e in failed[0].events)

    # RED metrics were recorded from 100% of entry spans, before sampling.
    def request_counts() -> dict[str, float]:
        counts: dict[str, float] = {}
        for point in collector.metrics():
            if point.metric == "crm.requests" and point.resource.get("service.name") == "sampled-crm":
                route = point.attributes.get("http.route")
                key = f"{route}|{point.attributes.get('http.response.status_code')}"
                counts[key] = max(counts.get(key, 0), point.value or 0)  # cumulative: the last is the max
        return counts

    expected = {"/fail|500": N_FAIL, "/slow|200": N_SLOW, "/ok|200": N_OK}
    wait_until(lambda: {k: request_counts().get(k) for k in expected} == expected, 20,
               f"crm.requests == {expected}")
    errors = [p for p in collector.metrics() if p.metric == "crm.request.errors"]
    assert max(p.value or 0 for p in errors) == N_FAIL
    assert {p.attributes.get("error.type") for p in errors} == {"500"}


def test_collector_mode_exports_everything(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "unsampled-crm", OTEL_CRM_SAMPLING_MODE="collector"))
    for _ in range(30):
        requests.get(app.url("/ok"), timeout=10)
    app.process.stop()
    wait_until(lambda: len([s for s in collector.spans() if s.name == "GET /ok"]) == 30, 20, "30 ok traces")
    assert all("crm.sampling.reason" not in s.attributes for s in collector.spans())


def test_head_mode_exports_the_ratio_and_still_counts_every_request(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "head-crm", OTEL_CRM_SAMPLING_MODE="head",
                                               OTEL_CRM_SAMPLING_RATIO="0.25"))
    session = requests.Session()
    for _ in range(N_OK):
        assert session.get(app.url("/ok"), timeout=10).status_code == 200
    app.process.stop()
    ok_ids = _access_trace_ids(app.process.output(), "/ok")
    assert len(ok_ids) == N_OK, "every request has its trace id, sampled or not"
    predicted = {t for t in ok_ids if _expected_keep(t, 0.25)}

    def kept() -> set[str]:
        return {s.trace_id for s in collector.spans() if s.name == "GET /ok"}

    wait_until(lambda: kept() >= predicted, 20, "the head-sampled traces in the collector output")
    assert kept() == predicted, "exactly the parent-based trace-id ratio's traces are exported"

    def ok_count() -> float:
        return max((p.value or 0 for p in collector.metrics() if p.metric == "crm.requests"
                    and p.attributes.get("http.route") == "/ok"), default=0)

    wait_until(lambda: ok_count() == N_OK, 20, f"crm.requests{{http.route=/ok}} == {N_OK}")
