"""Sampling rules end to end: the Flask example under `opentelemetry-instrument`, exporting to the real
collector, with the rules of docs/sampling.md in tail mode (the default) and in head mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.conftest import Collector, flask_app, instrumented_env, wait_until

pytestmark = pytest.mark.integration

RULES = json.dumps([{"name": "health", "route": "/health*", "ratio": 0, "errors": False},
                    {"name": "vip", "tenant": "vip-*", "ratio": 1}])
N = 40
RATIO = 0.1


def _expected_keep(trace_id_hex: str, ratio: float = RATIO) -> bool:
    return int(trace_id_hex, 16) & (2**64 - 1) < round(ratio * 2**64)


def _access_ids(output: str, path: str, tenant: str | None = None) -> list[str]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line["correlation_id"] for line in lines
            if line.get("logger") == "otel_crm.access" and line.get("path") == path
            and (tenant is None or line.get("tenant_id") == tenant)]


def _requests_count(collector: Collector, service: str, route: str) -> float:
    return max((p.value or 0 for p in collector.metrics() if p.metric == "crm.requests"
                and p.resource.get("service.name") == service and p.attributes.get("http.route") == route),
               default=0)


def test_tail_rules_drop_health_checks_keep_errors_and_a_vip_tenant(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "ruled-crm", OTEL_CRM_SAMPLING_RULES=RULES))
    session = requests.Session()
    for _ in range(N):
        assert session.get(app.url("/health"), timeout=10).status_code == 200
        assert session.get(app.url("/fail"), timeout=10).status_code == 500
        assert session.get(app.url("/ok"), headers={"X-Tenant-ID": "vip-acme"}, timeout=10).status_code == 200
        assert session.get(app.url("/ok"), headers={"X-Tenant-ID": "acme"}, timeout=10).status_code == 200
    app.process.stop()

    output = app.process.output()
    health_ids = _access_ids(output, "/health")
    ok_ids = _access_ids(output, "/ok")
    acme_ids = _access_ids(output, "/ok", "acme")
    assert len(health_ids) >= N and len(ok_ids) == 2 * N and len(acme_ids) == N
    assert any(_expected_keep(t) for t in health_ids), "the default ratio would have kept some"

    def server(route: str) -> list:  # type: ignore[type-arg]
        return [s for s in collector.spans() if s.name == f"GET {route}"]

    predicted = {t for t in acme_ids if _expected_keep(t)}

    def acme() -> set[str]:
        return {s.trace_id for s in server("/ok") if s.attributes.get("crm.tenant.id") == "acme"}

    def arrived() -> bool:
        vip = [s for s in server("/ok") if s.attributes.get("crm.tenant.id") == "vip-acme"]
        return len(server("/fail")) == N and len(vip) == N and acme() >= predicted

    wait_until(arrived, 30, "the error and vip traces in the collector output")
    wait_until(lambda: _requests_count(collector, "ruled-crm", "/health") >= N, 20, "RED counts health checks")
    assert server("/health") == [], "ratio 0 and errors: false: no health check is kept"
    assert all(s.attributes["crm.sampling.reason"] == "error" for s in server("/fail"))
    assert all("crm.sampling.rule" not in s.attributes for s in server("/fail")), "no rule matched /fail"
    vip = [s for s in server("/ok") if s.attributes.get("crm.tenant.id") == "vip-acme"]
    assert {(s.attributes["crm.sampling.rule"], s.attributes["crm.sampling.reason"],
             s.attributes["crm.sampling.weight"]) for s in vip} == {("vip", "ratio", 1.0)}
    assert acme() == predicted, "no rule matched: exactly the default ratio's trace ids"
    assert all("crm.sampling.rule" not in s.attributes for s in server("/ok")
               if s.attributes.get("crm.tenant.id") == "acme")


def test_head_rules_see_the_flask_route_and_the_tenant_at_span_start(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "head-ruled-crm", OTEL_CRM_SAMPLING_MODE="head",
                                               OTEL_CRM_SAMPLING_RATIO="0.5", OTEL_CRM_SAMPLING_RULES=RULES))
    session = requests.Session()
    for _ in range(N):
        assert session.get(app.url("/health"), timeout=10).status_code == 200
        assert session.get(app.url("/ok"), headers={"X-Tenant-ID": "vip-acme"}, timeout=10).status_code == 200
    app.process.stop()
    assert any(_expected_keep(t, 0.5) for t in _access_ids(app.process.output(), "/health"))

    def vip() -> list:  # type: ignore[type-arg]
        return [s for s in collector.spans() if s.name == "GET /ok"]

    wait_until(lambda: len(vip()) == N, 20, "every vip request exported")
    wait_until(lambda: _requests_count(collector, "head-ruled-crm", "/health") >= N, 20,
               "RED counts health checks")
    assert {s.attributes["crm.sampling.rule"] for s in vip()} == {"vip"}
    assert [s for s in collector.spans() if s.name == "GET /health"] == [], "route known at start: ratio 0"
