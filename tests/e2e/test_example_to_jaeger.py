"""The Flask example under `opentelemetry-instrument` → collector-config/otelcol.yaml → Jaeger v2,
asserted through Jaeger's HTTP API."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import App, flask_app, instrumented_env
from tests.e2e.stack import CONFIGS, CollectorProc, JaegerProc, collector_keeps, poll

pytestmark = pytest.mark.e2e
N_FAIL, N_SLOW, N_OK = 5, 3, 60


def _collector(jaeger: JaegerProc, log_dir: Path) -> CollectorProc:
    return CollectorProc(log_dir, CONFIGS / "otelcol.yaml", extra_env={
        "JAEGER_OTLP_ENDPOINT": jaeger.otlp_endpoint, "OTELCOL_DECISION_WAIT": "3s",
        "OTELCOL_BATCH_TIMEOUT": "200ms"}).start()


def _app_env(collector: CollectorProc, service: str, mode: str) -> dict[str, str]:
    env = instrumented_env(None, service, OTEL_CRM_SAMPLING_MODE=mode)
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{collector.grpc_endpoint}"
    return env


def _traffic(app: App) -> dict[str, set[str]]:
    """Fail, slow and ok requests; returns each path's trace ids from the JSON access log."""
    for _ in range(N_FAIL):
        requests.get(app.url("/fail"), timeout=10)
    with ThreadPoolExecutor(N_SLOW) as pool:
        list(pool.map(lambda _: requests.get(app.url("/slow"), timeout=20), range(N_SLOW)))
    lead = requests.post(app.url("/leads"), json={"name": "Ada", "email": "ada@example.com"}, timeout=10).json()
    for _ in range(N_OK):
        requests.get(app.url("/ok"), timeout=10)
    for _ in range(5):
        requests.post(app.url(f"/leads/{lead['id']}/enrich"), timeout=10)
    app.process.stop()
    ids: dict[str, set[str]] = {}
    for line in app.process.output().splitlines():
        if line.startswith("{") and '"otel_crm.access"' in line:
            record = json.loads(line)
            ids.setdefault(record["path"], set()).add(record["correlation_id"])
    return ids


def _traces_once_present(jaeger: JaegerProc, service: str, must_have: set[str]) -> dict[str, Any] | None:
    got = {t["traceID"]: t for t in jaeger.traces(service)}
    return got if must_have <= set(got) else None


def _complete(trace: dict[str, Any]) -> bool:
    """Every parent a span names is in the trace, and exactly one span is the root."""
    span_ids = {s["spanID"] for s in trace["spans"]}
    roots = 0
    for span in trace["spans"]:
        parents = [r["spanID"] for r in span.get("references") or [] if r["refType"] == "CHILD_OF"]
        if not parents:
            roots += 1
        elif parents[0] not in span_ids:
            return False
    return roots == 1


def test_collector_mode_errors_slow_and_the_baseline_reach_jaeger_whole(
        jaeger: JaegerProc, tmp_path: Path) -> None:
    collector = _collector(jaeger, tmp_path)
    service = "e2e-crm-collector-mode"
    try:
        ids = _traffic(flask_app(tmp_path, _app_env(collector, service, "collector")))
        expected_ok = {t for t in ids["/ok"] if collector_keeps(int(t, 16))}
        must_have = ids["/fail"] | ids["/slow"] | expected_ok
        traces = poll(lambda: _traces_once_present(jaeger, service, must_have), 40,
                      "error, slow and baseline traces in Jaeger")
    finally:
        collector.stop()
    assert {t for t in ids["/ok"] if t in traces} == expected_ok, "ok traces: exactly the baseline policy's"
    for trace_id in ids["/fail"] | ids["/slow"]:
        assert _complete(traces[trace_id])
    enrich = [traces[t] for t in ids["/leads/1/enrich"] if t in traces]
    for trace in enrich:  # server span + SQLAlchemy + the outgoing requests call, linked
        assert len(trace["spans"]) >= 4 and _complete(trace)
    slow_root = next(s for s in traces[next(iter(ids["/slow"]))]["spans"] if not s.get("references"))
    assert slow_root["duration"] >= 2_000_000  # µs


def test_tail_mode_traces_are_not_sampled_twice(jaeger: JaegerProc, tmp_path: Path) -> None:
    """An app sampling in process, behind our collector: the collector keeps what it kept."""
    collector = _collector(jaeger, tmp_path)
    service = "e2e-crm-tail-mode"
    bound = round(0.1 * 2**64)
    try:
        ids = _traffic(flask_app(tmp_path, _app_env(collector, service, "tail")))
        kept_in_process = {t for t in ids["/ok"] if int(t, 16) & (2**64 - 1) < bound}
        must_have = ids["/fail"] | ids["/slow"] | kept_in_process
        traces = poll(lambda: _traces_once_present(jaeger, service, must_have), 40,
                      "in-process decisions in Jaeger")
    finally:
        collector.stop()
    assert {t for t in ids["/ok"] if t in traces} == kept_in_process
