"""The Django CRM example under the real `opentelemetry-instrument`, exporting to the real collector:
server spans with http.route, ORM spans, and the tenant on spans, logs and RED metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.conftest import Collector, django_app, instrumented_env, wait_until
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration

SERVER, CLIENT = 2, 3
MANAGE = ROOT / "examples" / "django_crm" / "manage.py"


def test_django_server_orm_spans_tenant_logs_and_red_metrics(collector: Collector, tmp_path: Path) -> None:
    app = django_app(tmp_path, instrumented_env(collector, "django-crm", OTEL_CRM_SAMPLING_MODE="off"),
                     settings_in_env=False)
    tenant = {"X-Tenant-ID": "acme"}
    created = requests.post(app.url("/leads"), json={"name": "Ada", "email": "ada@example.com",
                                                     "company": "Acme"}, headers=tenant, timeout=10)
    assert created.status_code == 201, created.text
    lead_id = created.json()["id"]
    assert requests.get(app.url(f"/leads/{lead_id}"), headers=tenant, timeout=10).status_code == 200
    assert requests.get(app.url("/contacts"), headers={"X-Tenant-ID": "globex"}, timeout=10).json()
    assert requests.post(app.url(f"/leads/{lead_id}/enrich"), headers=tenant, timeout=10).status_code == 200
    assert requests.get(app.url("/fail"), headers=tenant, timeout=10).status_code == 500
    assert requests.get(app.url("/leads"), timeout=10).status_code == 200  # no tenant at all
    app.process.stop()

    wait_until(lambda: {"GET fail", "GET leads"} <= {s.name for s in collector.spans()}, 20, "the Django spans")
    spans = collector.spans()
    server = next(s for s in spans if s.name == "GET leads/<int:lead_id>")
    assert server.kind == SERVER
    assert server.attributes["http.route"] == "leads/<int:lead_id>"
    # runserver gives no RAW_URI / REQUEST_URI: otel_crm's WSGI integration supplies the target.
    assert server.attributes["url.path"] == f"/leads/{lead_id}"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["crm.tenant.id"] == "acme"
    assert server.resource["service.name"] == "django-crm"

    orm = [s for s in spans if s.trace_id == server.trace_id and s.attributes.get("db.system.name") == "sqlite"]
    assert [s.name for s in orm] == ["SELECT crm_lead"]
    assert orm[0].kind == CLIENT and orm[0].parent_span_id == server.span_id
    assert orm[0].attributes["db.operation.name"] == "SELECT"
    assert orm[0].attributes["db.collection.name"] == "crm_lead"
    assert "%s" in orm[0].attributes["db.query.text"]  # parameters, never values
    assert orm[0].attributes["crm.tenant.id"] == "acme"

    create = next(s for s in spans if s.name == "POST leads")
    assert any(s.name == "INSERT crm_lead" and s.trace_id == create.trace_id for s in spans)
    contacts = next(s for s in spans if s.name == "GET contacts")
    assert contacts.attributes["crm.tenant.id"] == "globex"
    enrich = next(s for s in spans if s.name == "POST leads/<int:lead_id>/enrich")
    outbound = [s for s in spans if s.trace_id == enrich.trace_id and s.kind == CLIENT and "url.full" in s.attributes]
    assert len(outbound) == 1 and outbound[0].attributes["crm.tenant.id"] == "acme"
    anonymous = next(s for s in spans if s.name == "GET leads")
    assert "crm.tenant.id" not in anonymous.attributes
    failed = next(s for s in spans if s.name == "GET fail")
    assert failed.status_code == 2 and failed.attributes["crm.tenant.id"] == "acme"
    # Startup queries (migrations, checks) are outside any trace: no stray one-span DB traces.
    assert all(s.parent_span_id for s in spans if s.attributes.get("db.system.name"))

    wait_until(lambda: any(r.body == "lead created" for r in collector.logs()), 20, "the app's log record")
    logs = collector.logs()
    created_log = next(r for r in logs if r.body == "lead created")
    assert created_log.attributes["crm.tenant.id"] == "acme"
    assert created_log.trace_id == create.trace_id
    # The access line is a stdout convenience; over OTLP the server span already says it all.
    assert not any(r.attributes.get("path") == f"/leads/{lead_id}" for r in logs)
    access = next(json.loads(line) for line in app.process.output().splitlines()
                  if line.startswith("{") and f'"path": "/leads/{lead_id}"' in line)
    assert access["tenant_id"] == "acme" and access["correlation_id"] == server.trace_id
    error = next(r for r in logs if str(r.body).startswith("Internal Server Error: /fail"))
    assert error.attributes["crm.tenant.id"] == "acme" and error.severity.upper().startswith("ERROR")

    def red_points() -> list:  # type: ignore[type-arg]
        return [p for p in collector.metrics() if p.metric == "crm.requests"]

    wait_until(lambda: any(p.attributes.get("crm.tenant.id") == "globex" for p in red_points()), 20,
               "crm.requests with tenants")
    by_route = {(p.attributes.get("http.route"), p.attributes.get("crm.tenant.id")) for p in red_points()}
    assert ("leads/<int:lead_id>", "acme") in by_route
    assert ("contacts", "globex") in by_route
    assert ("leads", None) in by_route
    errors = [p for p in collector.metrics() if p.metric == "crm.request.errors"]
    assert any(p.attributes.get("crm.tenant.id") == "acme" and p.attributes.get("http.route") == "fail"
               for p in errors)
    duration = [p for p in collector.metrics() if p.metric == "http.server.request.duration"]
    assert duration and {p.unit for p in duration} == {"s"}


def test_django_json_logs_on_stdout_carry_the_tenant(collector: Collector, tmp_path: Path) -> None:
    app = django_app(tmp_path, instrumented_env(collector, "django-crm"))
    requests.post(app.url("/leads"), json={"name": "Bo", "email": "bo@example.com"},
                  headers={"X-Tenant-ID": "initech", "X-User-ID": "u-77"}, timeout=10)
    app.process.stop()
    lines = [json.loads(line) for line in app.process.output().splitlines() if line.startswith("{")]
    created = next(line for line in lines if line["message"] == "lead created")
    assert created["tenant_id"] == "initech" and len(created["correlation_id"]) == 32
    assert "user_id" not in created  # personal data: opt-in (OTEL_CRM_CAPTURE_USER_ID)
    access = next(line for line in lines if line["logger"] == "otel_crm.access" and line.get("path") == "/leads")
    assert access["tenant_id"] == "initech" and access["status_code"] == 201
    assert access["correlation_id"] == created["correlation_id"]
