"""`make demo` (scripts/demo.sh) end to end: the real stack, the Flask example, traffic; then every
command it prints is run and must return what its label says. A printed command without a check
here fails the test, so the demo can only print queries that work."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import binary, free_port
from tests.support.processes import ROOT

pytestmark = pytest.mark.e2e

LIST_ROW = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+([\d.]+ (?:s|ms|µs))\s+(\d+)\s+(ERROR)?\s+(\S+)\s+(\S+)\s+"
                      r"([0-9a-f]{16,32})\s+(.+)$")


def _rows(out: str) -> list[re.Match[str]]:
    lines = out.strip().splitlines()
    assert lines and lines[0].split()[:3] == ["START", "DURATION", "SPANS"], out
    rows = [LIST_ROW.match(line) for line in lines[1:]]
    assert rows and all(rows), out
    return rows  # type: ignore[return-value]


def _seconds(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"s": 1, "ms": 1e-3, "µs": 1e-6}[unit]


def _recent(out: str) -> None:
    rows = _rows(out)
    assert len(rows) >= 20 and all(r.group(6) == "all" for r in rows)  # development profile: keep all


def _errors(out: str) -> None:
    rows = _rows(out)
    assert len(rows) == 3 and all(r.group(4) == "ERROR" and r.group(8) == "GET /fail" for r in rows)


def _slow(out: str) -> None:
    rows = _rows(out)
    assert rows and all(_seconds(r.group(2)) >= 2.0 for r in rows)
    assert any(r.group(8) == "GET /slow" for r in rows)


def _tenant(out: str) -> None:
    rows = _rows(out)
    assert len(rows) >= 12 and all(r.group(5) == "acme" for r in rows)


def _agent(out: str) -> None:
    assert out.startswith("trace ") and "POST /leads/<int:lead_id>/qualify" in out
    assert re.search(r"invoke_agent lead_researcher .* tokens=\d+ in/\d+ out cost=0\.\d+ USD", out), out
    assert "execute_workflow qualify_lead" in out and "db=sqlite" in out


def _slow_trace(out: str) -> None:
    header, root = out.splitlines()[:2]
    assert _seconds(" ".join(header.split()[3:5])) >= 2.0 and "tenant=initech" in header
    assert root.startswith("GET /slow") and "status=200" in root


def _api(out: str) -> None:
    assert len(json.loads(out)["data"]) == 20


def _api_500s(out: str) -> None:
    traces = json.loads(out)["data"]
    assert len(traces) == 3
    for trace in traces:
        assert any(t["key"] == "error" and t["value"] is True for s in trace["spans"] for t in s["tags"])


def _metrics(out: str) -> None:
    lines = out.strip().splitlines()
    assert lines and all(re.match(r"^(crm_requests_total|traces_span_metrics_calls_total)\{", line) for line in lines)


def _journeys(out: str) -> None:
    lines = out.strip().splitlines()
    assert lines and all(re.match(r"^crm_journey_(starts|completions)_total\{", line) for line in lines), out


def _logs(out: str) -> None:
    access = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(r.get("correlation_id") and r.get("tenant_id") == "acme" for r in access)


CHECKS: dict[str, Callable[[str], None]] = {
    "Recent traces": _recent, "Only errors": _errors, "Only slow (2 s or more)": _slow, "One tenant": _tenant,
    "An LLM agent in a workflow": _agent, "The slow trace": _slow_trace, "Jaeger API, raw JSON": _api,
    "Jaeger API, HTTP 500s": _api_500s, "RED metrics": _metrics, "Journeys": _journeys,
    "The app's JSON logs": _logs,
}


Demo = tuple[subprocess.CompletedProcess[str], float]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    stack_dir: Path = tmp_path_factory.mktemp("demo-stack")
    env = {**os.environ, "STACK_DIR": str(stack_dir), "DEMO_PORT": str(free_port()),
           "DEMO_SERVICE": f"crm-demo-{os.getpid()}", "PROMETHEUS_BIN": "/nonexistent",
           "OTELCOL_BIN": str(binary("OTELCOL_BIN", "otelcol-crm", "collector")),
           "JAEGER_BIN": str(binary("JAEGER_BIN", "jaeger", "jaeger"))}
    for var in ("OTELCOL_OTLP_GRPC_ENDPOINT", "OTELCOL_OTLP_HTTP_ENDPOINT", "OTELCOL_HEALTH_ENDPOINT",
                "OTELCOL_PROMETHEUS_ENDPOINT", "JAEGER_OTLP_GRPC_ENDPOINT", "JAEGER_OTLP_HTTP_ENDPOINT",
                "JAEGER_QUERY_HTTP_ENDPOINT", "JAEGER_QUERY_GRPC_ENDPOINT", "JAEGER_HEALTH_ENDPOINT"):
        env[var] = f"127.0.0.1:{free_port()}"
    env["JAEGER_OTLP_ENDPOINT"] = env["JAEGER_OTLP_GRPC_ENDPOINT"]
    for var in ("OTELCOL_TELEMETRY_PORT", "JAEGER_TELEMETRY_PORT"):
        env[var] = str(free_port())
    started = time.monotonic()
    try:
        result = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=300)
        yield result, time.monotonic() - started
    finally:
        subprocess.run(["bash", "scripts/stack.sh", "down"], cwd=ROOT, env=env, capture_output=True, timeout=60)


def test_demo_says_up_front_that_jaeger_serves_its_api_only(demo: Demo) -> None:
    result, _ = demo
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    head = result.stdout[:600]
    assert "serves its query API only" in head and "placeholder" in head
    assert "docker compose -f collector-config/docker-compose.yaml up" in head


def test_every_printed_query_returns_what_it_claims(demo: Demo) -> None:
    result, seconds = demo
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    section = result.stdout.split("Look at it, from the repository root:\n", 1)[1].split("Stop everything", 1)[0]
    printed = dict(re.findall(r"^  (.+?):  (.+)$", section, re.M))
    assert set(printed) == set(CHECKS), f"printed {sorted(printed)}; every printed command needs a check here"
    for label, command in printed.items():
        done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{label}: {command}\n{done.stderr}"
        try:
            CHECKS[label](done.stdout)
        except AssertionError as exc:
            raise AssertionError(f"{label}: `{command}` did not return what it claims:\n{done.stdout[:3000]}") from exc
    print(f"make demo took {seconds:.0f} s")  # shown with -s; the report quotes it


def test_demo_ends_with_the_slow_trace_drawn(demo: Demo) -> None:
    result, _ = demo
    tail = result.stdout.rsplit("The slow trace:\n", 1)[1]
    _slow_trace(tail)
    assert "tokens=" in result.stdout.rsplit("Stop everything", 1)[1]


def test_the_jaeger_queries_in_docs_traces_md_return_traces(demo: Demo) -> None:
    """docs/traces.md lists API queries "that work": run each against the demo's Jaeger and service."""
    result, _ = demo
    assert result.returncode == 0
    jaeger = re.search(r"--jaeger (http://\S+)", result.stdout)
    service = re.search(r"traces --service (\S+)", result.stdout)
    assert jaeger and service
    text = (ROOT / "docs" / "traces.md").read_text()
    queries = re.findall(r"^curl -s '(http://127\.0\.0\.1:16686/api/[^']+)'$", text, re.M)
    assert len(queries) >= 5
    for query in queries:
        url = query.replace("http://127.0.0.1:16686", jaeger.group(1)).replace("crm-api", service.group(1))
        done = subprocess.run(["curl", "-s", url], capture_output=True, text=True, timeout=30)
        data = json.loads(done.stdout)["data"]
        assert data, f"{query} returned nothing"
        if "status_code" in query:
            assert all(any(t["key"] == "error" and t["value"] is True for s in tr["spans"] for t in s["tags"])
                       for tr in data)
        if "minDuration" in query or "slow" in query:
            assert all(max(s["duration"] for s in tr["spans"]) >= 2_000_000 for tr in data)
