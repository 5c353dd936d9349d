"""The Flask example's activation journey under the real opentelemetry-instrument, through the real
collector: the milestone events (in the request's trace, subject hashed) and the journey metrics."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from otel_crm._internal import semconv
from tests.conftest import Collector, flask_app, instrumented_env, wait_until
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration
SERVER = 2
JOURNEYS_FILE = ROOT / "examples" / "journeys" / "crm_activation.json"


def latest(points: list[Any], metric: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    """The last exported point of each series of `metric` (the SDK exports cumulative points)."""
    found: dict[tuple[tuple[str, Any], ...], Any] = {}
    for point in points:
        if point.metric == metric:
            found[tuple(sorted(point.attributes.items()))] = point
    return found


def test_the_activation_journey_reaches_the_collector(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "journey-crm", OTEL_CRM_SAMPLING_MODE="off",
                                               OTEL_CRM_JOURNEYS_FILE=str(JOURNEYS_FILE),
                                               OTEL_CRM_SCRUB_SALT="pepper"))
    acme = {"X-Tenant-ID": "acme"}
    fresh = requests.post(app.url("/signup"), json={"email": "ada@example.com"}, headers=acme, timeout=10).json()["id"]
    imported_at = datetime.now(timezone.utc) - timedelta(minutes=40)
    imported = requests.post(app.url("/signup"), json={"email": "bob@example.com",
                                                      "signed_up_at": imported_at.isoformat()},
                             headers=acme, timeout=10).json()["id"]
    user = {**acme, "X-User-ID": str(fresh)}
    lead = {"name": "Lead", "email": "lead@example.com", "company": "Acme"}
    lead_id = requests.post(app.url("/leads"), json=lead, headers=user, timeout=10).json()["id"]
    assert requests.post(app.url("/leads"), json=lead, headers=user, timeout=10).status_code == 201  # a repeat
    assert requests.post(app.url(f"/leads/{lead_id}/enrich"), headers=user, timeout=10).status_code == 200
    assert requests.post(app.url("/sync/hubspot"), headers=user, timeout=10).json() == {"synced": 25}
    assert requests.post(app.url("/sync/hubspot"), headers=user, timeout=10).status_code == 200  # a repeat
    requests.post(app.url("/leads"), json=lead, headers={**acme, "X-User-ID": str(imported)}, timeout=10)
    app.process.stop()

    def events() -> list[Any]:
        return [r for r in collector.logs() if r.event_name == semconv.CRM_JOURNEY_MILESTONE_EVENT]

    wait_until(lambda: len(events()) >= 6, 20, "six journey milestone events")
    reached = sorted((e.attributes["crm.journey.milestone.name"], e.attributes["crm.journey.subject.id"])
                     for e in events())

    def hashed(subject: int) -> str:
        return "[HASH:" + hmac.new(b"pepper", str(subject).encode(), hashlib.sha256).hexdigest()[:16] + "]"

    assert reached == sorted([("signed_up", hashed(fresh)), ("first_lead", hashed(fresh)),
                              ("first_enrichment", hashed(fresh)), ("first_sync", hashed(fresh)),
                              ("signed_up", hashed(imported)), ("first_lead", hashed(imported))])
    by_milestone = {(e.attributes["crm.journey.milestone.name"], e.attributes["crm.journey.subject.id"]): e
                    for e in events()}
    done = by_milestone["first_sync", hashed(fresh)]
    assert done.attributes["crm.journey.name"] == "crm_activation"
    assert done.attributes["crm.journey.completed"] is True and done.attributes["crm.tenant.id"] == "acme"
    assert done.attributes["crm.journey.milestone.target"] == 1800
    assert 0 <= done.attributes["crm.journey.milestone.stage_duration"] < done.attributes[
        "crm.journey.milestone.elapsed"] < 60
    late = by_milestone["first_lead", hashed(imported)]
    assert late.attributes["crm.journey.milestone.over_target"] is True
    assert 40 * 60 <= late.attributes["crm.journey.milestone.elapsed"] < 45 * 60

    # Correlated: the event is in the request's trace, and the request's span carries the milestone.
    wait_until(lambda: any(s.name == "POST /sync/hubspot" for s in collector.spans()), 20, "the spans")
    spans = [s for s in collector.spans()
             if s.attributes.get("crm.journey.milestone.name") == "first_sync"]
    assert len(spans) == 1 and spans[0].kind == SERVER and spans[0].name == "POST /sync/hubspot"
    assert done.trace_id == spans[0].trace_id and done.span_id == spans[0].span_id
    assert spans[0].attributes["crm.journey.subject.id"] == hashed(fresh)

    expected = {"crm.journey.starts", "crm.journey.completions", "crm.journey.milestones",
                "crm.journey.elapsed", "crm.journey.stage.duration", "crm.journey.over_target",
                "crm.journey.efficiency", "crm.journey.target"}
    wait_until(lambda: expected <= {p.metric for p in collector.metrics()}, 20, f"metrics {expected}")
    wait_until(lambda: sum(p.value for p in latest(collector.metrics(), "crm.journey.milestones").values()) == 6,
               20, "the last metric export")
    points = collector.metrics()
    base = {"crm.journey.name": "crm_activation", "crm.tenant.id": "acme"}

    def value(metric: str, milestone: str) -> float | None:
        point = latest(points, metric).get(tuple(sorted({**base, "crm.journey.milestone.name": milestone}.items())))
        return None if point is None else (point.value if point.value is not None else point.count)

    assert value("crm.journey.starts", "signed_up") == 2
    assert value("crm.journey.milestones", "first_lead") == 2 and value("crm.journey.milestones", "first_sync") == 1
    assert value("crm.journey.completions", "first_sync") == 1
    assert value("crm.journey.over_target", "first_lead") == 1
    assert value("crm.journey.elapsed", "first_lead") == 2 and value("crm.journey.efficiency", "first_sync") == 1
    assert value("crm.journey.stage.duration", "first_enrichment") == 1
    elapsed = next(iter(latest(points, "crm.journey.elapsed").values()))
    assert elapsed.unit == "s" and elapsed.bounds == list(semconv.CRM_JOURNEY_BUCKETS)
    targets = {p.attributes["crm.journey.milestone.name"]: p.value
               for p in latest(points, "crm.journey.target").values()}
    assert targets == {"signed_up": 0, "first_lead": 300, "first_enrichment": 900, "first_sync": 1800}
    journey_points = [p for p in points if p.metric.startswith("crm.journey.")]
    assert all(set(p.attributes) <= {"crm.journey.name", "crm.journey.milestone.name", "crm.tenant.id"}
               for p in journey_points), "never the subject on a metric"
