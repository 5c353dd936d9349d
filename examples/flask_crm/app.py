"""A small CRM API: leads CRUD on SQLite through SQLAlchemy, an outbound enrichment call.

Run it under the distro, no code changes needed:

    opentelemetry-instrument python examples/flask_crm/app.py

Environment: CRM_PORT (default 5000), CRM_DB_URL (default: an in-memory SQLite database),
CRM_SERVICES_URL (default: local stand-in services started by the app on a free port),
CRM_TEST_ENDPOINTS=1 (adds the test-only ``/privacy-probe``).

The activation journey (signup → first lead → first enrichment → first successful sync, see
docs/journeys.md) is declared in examples/journeys/crm_activation.json: run with
``OTEL_CRM_JOURNEYS_FILE=examples/journeys/crm_activation.json`` and send ``X-User-ID: <id from
POST /signup>`` with the requests of that user.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import requests
from flask import Flask, Response, abort, jsonify, request, stream_with_context
from sqlalchemy import DateTime, String, create_engine, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool

import otel_crm

try:  # run as a script or as a package module
    from local_services import start_local_services
except ImportError:  # pragma: no cover
    from examples.flask_crm.local_services import start_local_services

log = logging.getLogger("crm")


class Base(DeclarativeBase):
    pass


class HubSpotConnector:
    """A HubSpot-like connector: the decorator names the span `sync hubspot` and counts records."""

    connector_name = "hubspot"

    def __init__(self, base_url: str, http: requests.Session):
        self.base_url = base_url
        self.http = http

    @otel_crm.instrument_sync_operation("contacts")
    def sync_contacts(self) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.base_url}/hubspot/contacts", timeout=5)
        response.raise_for_status()
        return list(response.json()["results"])


class Lead(Base):
    __tablename__ = "leads"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(200))
    company: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(40), default="new")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "email": self.email, "company": self.company,
                "status": self.status}


class User(Base):
    """An account; the milestone columns are the app's own record of its activation journey."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    signed_up_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    first_lead_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    first_enrichment_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    first_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


JOURNEY = "crm_activation"
# milestone -> (the column recording it, the column of the milestone before it)
MILESTONES = {"first_lead": ("first_lead_at", "signed_up_at"),
              "first_enrichment": ("first_enrichment_at", "first_lead_at"),
              "first_sync": ("first_sync_at", "first_enrichment_at")}


def utc(value: datetime) -> datetime:
    """SQLite hands datetimes back without their timezone; this app stores UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def reach(engine: Any, milestone: str) -> None:
    """Record `milestone` for the requesting user (X-User-ID) the first time they reach it.

    otel_crm keeps no per-user state: the app dedupes. The conditional UPDATE is the "first time"
    check (it changes one row only while the column is empty, even under concurrent requests).
    """
    user_id = request.headers.get("X-User-ID", "")
    if not user_id.isdigit():
        return
    column, previous = MILESTONES[milestone]
    with Session(engine) as session:
        first = session.execute(update(User).where(User.id == int(user_id), getattr(User, column).is_(None))
                                .values({column: datetime.now(timezone.utc)}))
        session.commit()
        user = session.get(User, int(user_id)) if first.rowcount == 1 else None  # type: ignore[attr-defined]
        if user is None:  # not one of our users, or not the first time
            return
        previous_at = getattr(user, previous)  # None when the user skipped that milestone
        otel_crm.journey_milestone(JOURNEY, milestone, subject_id=user.id, started_at=utc(user.signed_up_at),
                                   previous_at=utc(previous_at) if previous_at is not None else None)


def create_app(db_url: str | None = None, services_url: str | None = None) -> Flask:
    db_url = db_url or os.environ.get("CRM_DB_URL", "sqlite://")
    engine = create_engine(db_url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    Base.metadata.create_all(engine)
    if services_url is None:
        services_url = os.environ.get("CRM_SERVICES_URL")
    if not services_url:
        server = start_local_services()
        services_url = f"http://127.0.0.1:{server.server_address[1]}"
    app = Flask("flask_crm")
    http = requests.Session()

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.post("/signup")
    def signup() -> Any:
        body = request.get_json(force=True, silent=True) or {}
        if not body.get("email"):
            abort(400, "email is required")
        # Accounts imported from another CRM keep their original signup time.
        signed_up_at = (datetime.fromisoformat(body["signed_up_at"]) if body.get("signed_up_at")
                        else datetime.now(timezone.utc))
        with Session(engine) as session:
            user = User(email=body["email"], signed_up_at=signed_up_at)
            session.add(user)
            session.commit()
            otel_crm.journey_milestone(JOURNEY, "signed_up", subject_id=user.id, started_at=signed_up_at)
            return {"id": user.id}, 201

    @app.get("/leads")
    def list_leads() -> Any:
        with Session(engine) as session:
            leads = session.scalars(select(Lead).order_by(Lead.id).limit(100)).all()
            return jsonify([lead.to_dict() for lead in leads])

    @app.post("/leads")
    def create_lead() -> Any:
        body = request.get_json(force=True, silent=True) or {}
        if not body.get("name") or not body.get("email"):
            abort(400, "name and email are required")
        with Session(engine) as session:
            lead = Lead(name=body["name"], email=body["email"], company=body.get("company", ""))
            session.add(lead)
            session.commit()
            log.info("lead created", extra={"lead_id": lead.id})
            created = lead.to_dict()
        reach(engine, "first_lead")
        return created, 201

    @app.get("/leads/export")
    def export_leads() -> Any:
        """A streamed CSV: the body is produced while the server sends it, after the request
        handler returned; its log lines still carry the tenant and the trace id."""
        def rows() -> Iterator[str]:
            yield "id,name,company\n"
            with Session(engine) as session:
                for lead in session.scalars(select(Lead).order_by(Lead.id).limit(1000)):
                    yield f"{lead.id},{lead.name},{lead.company}\n"
            log.info("leads exported")

        return Response(stream_with_context(rows()), mimetype="text/csv")

    @app.get("/leads/<int:lead_id>")
    def get_lead(lead_id: int) -> Any:
        with Session(engine) as session:
            lead = session.get(Lead, lead_id)
            if lead is None:
                abort(404)
            return lead.to_dict()

    @app.post("/leads/<int:lead_id>/enrich")
    def enrich_lead(lead_id: int) -> Any:
        with Session(engine) as session:
            lead = session.get(Lead, lead_id)
            if lead is None:
                abort(404)
            response = http.get(f"{services_url}/enrich", params={"company": lead.company}, timeout=5)
            response.raise_for_status()
            data = response.json()
            lead.status = "enriched"
            session.commit()
            log.info("lead enriched", extra={"lead_id": lead_id})
            enriched = {"lead": lead.to_dict(), "enrichment": data}
        reach(engine, "first_enrichment")
        return enriched

    hubspot = HubSpotConnector(services_url, http)

    @app.post("/sync/hubspot")
    def sync_hubspot() -> Any:
        contacts = hubspot.sync_contacts()
        reach(engine, "first_sync")  # only reached when the sync succeeded
        return {"synced": len(contacts)}

    @app.get("/leads/search")
    def search_leads() -> Any:
        query = {"query": {"match": {"company": request.args.get("q", "")}}, "size": 10}
        with otel_crm.search_query("leads", system="elasticsearch", query=query) as search:
            response = http.post(f"{services_url}/leads/_search", json=query, timeout=5)
            hits = response.json()["hits"]["hits"]
            search.set_results(len(hits))
        return {"hits": [hit["_source"] for hit in hits]}

    @app.post("/leads/<int:lead_id>/qualify")
    def qualify_lead(lead_id: int) -> Any:
        with otel_crm.workflow("qualify_lead", execution_id=f"q-{lead_id}-{time.time_ns()}",
                               trigger="api"):
            with otel_crm.step("load_lead", index=0), Session(engine) as session:
                lead = session.get(Lead, lead_id)
                if lead is None:
                    abort(404)
                company = lead.company
            with otel_crm.step("research", index=1), otel_crm.agent_invocation(
                    "openai", "gpt-4o-mini", agent_name="lead_researcher") as agent:
                answer = http.post(f"{services_url}/v1/chat/completions", timeout=5, json={
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"Is {company} a good fit?"}]}).json()
                agent.record_usage(answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"],
                                   response_model=answer["model"])
            with otel_crm.step("score", index=2), Session(engine) as session:
                lead = session.get(Lead, lead_id)
                assert lead is not None
                lead.status = "qualified" if "strong fit" in answer["choices"][0]["message"]["content"] else "nurture"
                session.commit()
                log.info("lead qualified", extra={"lead_id": lead_id})
                return {"lead": lead.to_dict()}

    @app.get("/ok")
    def ok() -> Any:
        return {"status": "ok"}

    @app.get("/fail")
    def fail() -> Any:
        raise RuntimeError("the CRM backend failed on purpose")

    @app.get("/slow")
    def slow() -> Any:
        time.sleep(float(request.args.get("seconds", "2.1")))
        return {"status": "slow"}

    if os.environ.get("CRM_TEST_ENDPOINTS") == "1":
        add_privacy_probe(app, engine)
    return app


def add_privacy_probe(app: Flask, engine: Any) -> None:
    """Test-only (CRM_TEST_ENDPOINTS=1): what careless application code does with a secret — put it
    on the span and in an event, log it in the message and in an ``extra=`` field, send it to the
    database as a literal, name a workflow after it, raise with it in the message. The privacy
    corpus test (tests/integration/test_privacy_corpus.py) checks that none of it leaves the process."""
    from opentelemetry import trace

    @app.get("/privacy-probe")
    def privacy_probe_get() -> Any:  # the secret is in the URL: the instrumentation records it
        return {"status": "ok"}

    @app.post("/privacy-probe")
    def privacy_probe() -> Any:
        body = request.get_json(force=True, silent=True) or {}
        note = str(body.get("text", ""))
        span = trace.get_current_span()
        span.set_attribute("crm.probe.note", note)
        if body.get("deal_id"):
            span.set_attribute("crm.deal.id", str(body["deal_id"]))
        span.add_event("probe.event", {"probe.detail": note})
        log.info("probe note: %s", note)
        log.info("probe extra", extra={"probe_detail": note})
        with Session(engine) as session:  # a literal, as hand-written SQL has them
            quoted = note.replace("'", "''")
            session.connection().exec_driver_sql(f"SELECT count(*) FROM leads WHERE company = '{quoted}'")
        with otel_crm.workflow(note, execution_id="probe"):
            pass
        raise ValueError(f"probe failed: {note}")


if __name__ == "__main__":
    port = int(os.environ.get("CRM_PORT", "5000"))
    create_app().run(host="127.0.0.1", port=port, threaded=True, use_reloader=False)
