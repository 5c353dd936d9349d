"""Tenants across real services: A (the Flask example) calls B (the Django example) with requests;
B trusts incoming baggage and calls an internal service of ours and a third-party API. Every
process runs under `opentelemetry-instrument` and exports to the real collector.

    test → A (Flask, X-Tenant-ID) → B (Django, trusts baggage) ─┬→ internal  127.0.0.1 (baggage)
                                                                └→ partner   127.0.0.2 (no baggage)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Collector, django_app, flask_app, instrumented_env, wait_until

pytestmark = pytest.mark.integration

SERVER, CLIENT = 2, 3


class Recorder:
    """A tiny HTTP server that records the headers of every request it gets."""

    def __init__(self, host: str):
        self.requests: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                recorder.requests.append({"path": self.path,
                                          **{k.lower(): v for k, v in self.headers.items()}})
                body = json.dumps({"industry": "software"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def internal() -> Iterator[Recorder]:
    recorder = Recorder("127.0.0.1")  # on the default allow-list
    yield recorder
    recorder.close()


@pytest.fixture
def partner() -> Iterator[Recorder]:
    recorder = Recorder("127.0.0.2")  # loopback, but not on the allow-list: a third party
    yield recorder
    recorder.close()


def test_tenant_follows_the_call_to_b_and_never_reaches_the_third_party(
        collector: Collector, tmp_path: Path, internal: Recorder, partner: Recorder) -> None:
    b = django_app(tmp_path, instrumented_env(collector, "crm-b", OTEL_CRM_SAMPLING_MODE="off",
                                              OTEL_CRM_TRUST_INCOMING_BAGGAGE="true",
                                              CRM_SERVICES_URL=internal.url, CRM_PARTNER_URL=partner.url),
                   name="crm_b")
    a = flask_app(tmp_path, instrumented_env(collector, "crm-a", OTEL_CRM_SAMPLING_MODE="off",
                                             CRM_SERVICES_URL=b.url("")), name="crm_a")
    lead = requests.post(a.url("/leads"), json={"name": "Ada", "email": "ada@example.com", "company": "Acme"},
                         headers={"X-Tenant-ID": "acme"}, timeout=10).json()
    enriched = requests.post(a.url(f"/leads/{lead['id']}/enrich"), headers={"X-Tenant-ID": "acme"}, timeout=20)
    assert enriched.status_code == 200, enriched.text
    # B saw A's tenant in baggage (B echoes the header it received).
    assert "crm.tenant.id=acme" in enriched.json()["enrichment"]["baggage_seen"]
    a.process.stop()
    b.process.stop()

    # The internal service of ours got the tenant two hops down; the third party got nothing.
    assert len(internal.requests) == 1 and len(partner.requests) == 1
    assert "crm.tenant.id=acme" in internal.requests[0]["baggage"]
    assert "baggage" not in partner.requests[0]
    assert "traceparent" in partner.requests[0]  # trace context is not personal data

    wait_until(lambda: {"GET enrich", "POST /leads/<int:lead_id>/enrich"} <= {s.name for s in collector.spans()},
               20, "A's and B's server spans")
    spans = collector.spans()
    a_server = next(s for s in spans if s.name == "POST /leads/<int:lead_id>/enrich")
    b_server = next(s for s in spans if s.name == "GET enrich")
    assert a_server.resource["service.name"] == "crm-a" and b_server.resource["service.name"] == "crm-b"
    assert b_server.trace_id == a_server.trace_id
    assert a_server.attributes["crm.tenant.id"] == "acme"
    assert b_server.attributes["crm.tenant.id"] == "acme"
    b_children = [s for s in spans if s.trace_id == b_server.trace_id and s.resource["service.name"] == "crm-b"
                  and s.span_id != b_server.span_id]
    assert any(s.attributes.get("db.system.name") == "sqlite" for s in b_children)
    assert len([s for s in b_children if s.kind == CLIENT and "url.full" in s.attributes]) == 2
    assert all(s.attributes.get("crm.tenant.id") == "acme" for s in b_children)

    wait_until(lambda: any(r.body == "company enriched" for r in collector.logs()), 20, "B's log record")
    record = next(r for r in collector.logs() if r.body == "company enriched")
    assert record.attributes["crm.tenant.id"] == "acme" and record.trace_id == a_server.trace_id

    def b_red() -> list:  # type: ignore[type-arg]
        return [p for p in collector.metrics() if p.metric == "crm.requests"
                and p.resource.get("service.name") == "crm-b" and p.attributes.get("http.route") == "enrich"]

    wait_until(lambda: bool(b_red()), 20, "B's RED metrics")
    assert {p.attributes.get("crm.tenant.id") for p in b_red()} == {"acme"}


def test_b_ignores_forged_baggage_unless_it_trusts_it(collector: Collector, tmp_path: Path,
                                                      internal: Recorder) -> None:
    """B exposed to callers directly, trust off (the default): a forged tenant in baggage names no
    tenant on B's telemetry and is not passed on to the services B calls."""
    b = django_app(tmp_path, instrumented_env(collector, "crm-b", OTEL_CRM_SAMPLING_MODE="off",
                                              CRM_SERVICES_URL=internal.url), name="crm_b_untrusting")
    response = requests.get(b.url("/enrich?company=Acme"), timeout=10,
                            headers={"baggage": "crm.tenant.id=victim,crm.user.id=u-1,feature=beta"})
    assert response.status_code == 200
    b.process.stop()
    assert len(internal.requests) == 1
    assert "crm.tenant.id" not in internal.requests[0].get("baggage", "")
    assert "feature=beta" in internal.requests[0].get("baggage", "")  # other baggage still flows
    wait_until(lambda: any(s.name == "GET enrich" for s in collector.spans()), 20, "B's server span")
    spans = collector.spans()
    assert not [s.name for s in spans if "crm.tenant.id" in s.attributes]
    assert "victim" not in (collector.output / "traces.jsonl").read_text()
