"""The Flask CRM example under the real `opentelemetry-instrument`, exporting to the real collector."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
import requests

from tests.conftest import Collector, flask_app, instrumented_env, wait_until

pytestmark = pytest.mark.integration

SERVER, CLIENT = 2, 3


def _post(url: str, body: dict) -> dict:
    response = requests.post(url, json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def test_spans_metrics_and_logs_reach_the_collector(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "flask-crm", OTEL_CRM_SAMPLING_MODE="off",
                                               OTEL_CRM_ENVIRONMENT="staging"))
    lead = _post(app.url("/leads"), {"name": "Ada", "email": "ada@example.com", "company": "Acme"})
    for _ in range(3):  # the same attribute sets again: recorded through otel_crm's fast histogram path
        assert requests.get(app.url(f"/leads/{lead['id']}"), timeout=10).status_code == 200
    assert requests.post(app.url(f"/leads/{lead['id']}/enrich"), timeout=10).status_code == 200
    app.process.stop()

    def enrich_trace_complete() -> bool:
        return any(s.name == "POST /leads/<int:lead_id>/enrich" for s in collector.spans())

    wait_until(enrich_trace_complete, 20, "the enrich request's spans in the collector output")
    spans = collector.spans()
    server = next(s for s in spans if s.name == "GET /leads/<int:lead_id>")
    assert server.kind == SERVER
    assert server.attributes["http.route"] == "/leads/<int:lead_id>"
    assert server.attributes["http.request.method"] == "GET"
    assert server.attributes["url.path"] == f"/leads/{lead['id']}"
    assert server.attributes["http.response.status_code"] == 200

    enrich = next(s for s in spans if s.name == "POST /leads/<int:lead_id>/enrich")
    children = [s for s in spans if s.trace_id == enrich.trace_id and s.span_id != enrich.span_id]
    db = [s for s in children if s.attributes.get("db.system.name") == "sqlite"]
    assert db, "SQLAlchemy spans are children of the request"
    assert all(s.parent_span_id == enrich.span_id for s in db)
    http_client = [s for s in children if s.kind == CLIENT and "url.full" in s.attributes]
    assert len(http_client) == 1 and http_client[0].parent_span_id == enrich.span_id
    assert http_client[0].attributes["http.response.status_code"] == 200

    resource = server.resource
    assert resource["service.name"] == "flask-crm"
    assert resource["deployment.environment.name"] == "staging"
    assert resource["telemetry.distro.name"] == "otel_crm"
    assert resource["service.instance.id"]
    assert "deployment.environment" not in resource

    wait_until(lambda: any(p.metric == "http.server.request.duration" for p in collector.metrics()), 20,
               "http.server.request.duration")
    duration = [p for p in collector.metrics() if p.metric == "http.server.request.duration"]
    assert {p.unit for p in duration} == {"s"}
    assert 0.005 in duration[0].bounds and 10.0 in duration[0].bounds
    # Every request counted once, in both duration histograms (cumulative: the last export's count).
    routes = {"/leads", "/leads/<int:lead_id>", "/leads/<int:lead_id>/enrich"}
    for name in ("http.server.request.duration", "crm.request.duration"):
        counts: dict[object, int] = {}
        for point in collector.metrics():
            if point.metric == name and point.attributes.get("http.route") in routes:
                key = (point.attributes["http.route"], point.attributes["http.request.method"])
                counts[key] = max(counts.get(key, 0), point.count or 0)
        assert counts == {("/leads", "POST"): 1, ("/leads/<int:lead_id>", "GET"): 3,
                          ("/leads/<int:lead_id>/enrich", "POST"): 1}, name

    wait_until(lambda: any(r.body == "lead enriched" for r in collector.logs()), 20, "the app's log record")
    enriched = [r for r in collector.logs() if r.body == "lead enriched"]
    assert len(enriched) == 1, "each log record is exported once (no duplicate handlers)"
    record = enriched[0]
    assert record.trace_id == enrich.trace_id
    assert record.resource["service.name"] == "flask-crm"


def test_json_logs_on_stdout_carry_the_trace_id(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "flask-crm", OTEL_CRM_SAMPLING_MODE="off"))
    lead = _post(app.url("/leads"), {"name": "Bo", "email": "bo@example.com"})
    requests.get(app.url("/fail"), timeout=10)
    app.process.stop()
    lines = [json.loads(line) for line in app.process.output().splitlines() if line.startswith("{")]
    created = next(line for line in lines if line["message"] == "lead created")
    assert set(created) >= {"timestamp", "level", "message", "logger", "service", "environment",
                            "correlation_id", "span_id"}
    assert created["timestamp"].endswith("Z") and len(created["correlation_id"]) == 32
    access = next(line for line in lines if line["logger"] == "otel_crm.access"
                  and line.get("path") == "/leads")
    assert access["method"] == "POST" and access["status_code"] == 201
    assert access["correlation_id"] == created["correlation_id"]
    assert isinstance(access["latency_ms"], float)
    error = next(line for line in lines if line.get("exception_type") == "RuntimeError")
    assert "failed on purpose" in error["exception_message"] and "Traceback" in error["stack_trace"]
    assert lead["id"] == 1


def test_bad_setting_logs_one_line_and_the_app_still_serves(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "flask-crm", OTEL_CRM_SAMPLING_RATIO="lots"))
    assert requests.get(app.url("/ok"), timeout=10).status_code == 200
    app.process.stop()
    lines = [line for line in app.process.output().splitlines() if "OTEL_CRM_SAMPLING_RATIO" in line]
    assert len(lines) == 1, lines
    assert "'lots'" in lines[0] and "from 0 to 1" in lines[0]


def test_strict_mode_refuses_to_start_with_a_bad_setting(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited") as failure:
        flask_app(tmp_path, instrumented_env(None, "flask-crm", OTEL_CRM_SAMPLING_RATIO="lots",
                                             OTEL_CRM_STRICT="true"))
    assert "OTEL_CRM_SAMPLING_RATIO" in str(failure.value)


def test_collector_down_adds_no_latency_and_exit_is_bounded(tmp_path: Path) -> None:
    # Port 9 (discard) has nothing listening on loopback: every export fails.
    app = flask_app(tmp_path, instrumented_env(None, "flask-crm", OTEL_CRM_SAMPLING_MODE="off",
                                               OTEL_BSP_SCHEDULE_DELAY="50"))
    timings = []
    for _ in range(30):
        started = time.perf_counter()
        with urllib.request.urlopen(app.url("/ok"), timeout=5) as response:
            assert response.status == 200
        timings.append(time.perf_counter() - started)
    timings.sort()
    assert timings[len(timings) // 2] < 0.05, timings
    exit_seconds = app.process.stop(timeout=15)
    assert exit_seconds < 3 + 2.5, f"exit took {exit_seconds:.1f}s with the collector down"
    assert app.process.proc.returncode is not None


def test_a_streamed_response_logs_with_the_tenant_and_the_trace_id(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "flask-stream", OTEL_CRM_SAMPLING_MODE="off"))
    _post(app.url("/leads"), {"name": "Ada", "email": "ada@example.com", "company": "Acme"})
    response = requests.get(app.url("/leads/export"), headers={"X-Tenant-ID": "acme"}, timeout=10, stream=True)
    assert b"".join(response.iter_content(None)).decode().splitlines()[1].endswith(",Ada,Acme")
    app.process.stop()

    def exported() -> list:  # type: ignore[type-arg]
        return [r for r in collector.logs() if r.body == "leads exported"]

    wait_until(lambda: bool(exported()) and any(s.name == "GET /leads/export" for s in collector.spans()), 20,
               "the streamed body's log record and the request's span in the collector")
    (record,) = exported()
    server = next(s for s in collector.spans() if s.name == "GET /leads/export")
    assert record.attributes["crm.tenant.id"] == "acme"
    assert (record.trace_id, record.span_id) == (server.trace_id, server.span_id)
