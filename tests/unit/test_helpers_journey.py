"""journey_milestone(): the event, the metrics, the span attributes, and every bad or odd input."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import otel_crm
from otel_crm._internal import safety, semconv
from otel_crm._internal.tenancy import tenant_context
from otel_crm.helpers import MilestoneRecord, journey_milestone
from otel_crm.testing import CapturedTelemetry, capture_telemetry

journey_module = importlib.import_module("otel_crm.helpers.journey")
ROOT = Path(__file__).resolve().parents[2]
ONBOARDING = {"onboarding": {"milestones": [
    {"name": "signed_up"}, {"name": "first_project", "target_s": 300}, {"name": "first_agent", "target_s": 600},
    {"name": "first_workflow", "target_s": 900}, {"name": "first_success", "target_s": 1800}],
    "total_target_s": 3600}}
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
JOURNEY_METRICS = ("crm.journey.elapsed", "crm.journey.stage.duration", "crm.journey.milestones",
                   "crm.journey.starts", "crm.journey.completions", "crm.journey.over_target",
                   "crm.journey.efficiency", "crm.journey.anomalies")


@pytest.fixture
def telemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[CapturedTelemetry]:
    """The onboarding journey declared, and the helper's clock stopped at NOW."""
    monkeypatch.setattr(journey_module, "_clock", NOW.timestamp)
    with capture_telemetry(journeys=ONBOARDING, scrub_salt="pepper") as captured:
        yield captured


class Errors:
    """What reached `crm.internal.errors`: (component, error.type) per count."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def add(self, amount: int, attributes: dict[str, str]) -> None:
        self.seen.append((attributes[semconv.CRM_COMPONENT], attributes[semconv.ERROR_TYPE]))


@pytest.fixture
def errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[Errors]:
    """Production behaviour (internal errors swallowed) with the internal-error counter observed."""
    counted = Errors()
    monkeypatch.setattr(safety, "_counter", counted)
    safety.reraise_internal_errors(False)
    try:
        yield counted
    finally:
        safety.reraise_internal_errors(None)


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def events(telemetry: CapturedTelemetry) -> list[Any]:
    return [r.log_record for r in telemetry.logs() if r.log_record.event_name == "crm.journey.milestone"]


def points(telemetry: CapturedTelemetry, name: str) -> list[Any]:
    return telemetry.metric_points(name)


def labels(point: Any) -> dict[str, Any]:
    return dict(point.attributes)


def test_a_milestone_emits_the_event_in_the_current_trace(telemetry: CapturedTelemetry) -> None:
    with tenant_context("acme"), trace.get_tracer("t").start_as_current_span("POST /projects") as span:
        record = journey_milestone("onboarding", "first_agent", subject_id="user-42", started_at=ago(minutes=20),
                                   previous_at=ago(minutes=4), attributes={"plan": "trial"})
    assert record == MilestoneRecord("onboarding", "first_agent", 2, 1200.0, 240.0, 900.0, True, False, False,
                                     None, ())
    (event,) = events(telemetry)
    assert event.trace_id == span.get_span_context().trace_id and event.span_id == span.get_span_context().span_id
    assert event.severity_text == "INFO" and event.body == "journey onboarding: first_agent"
    assert dict(event.attributes) == {
        "crm.journey.name": "onboarding", "crm.journey.milestone.name": "first_agent",
        "crm.journey.milestone.index": 2, "crm.journey.milestone.elapsed": 1200.0,
        "crm.journey.milestone.stage_duration": 240.0, "crm.journey.milestone.target": 900.0,
        "crm.journey.milestone.over_target": True, "crm.journey.completed": False,
        "crm.journey.subject.id": "[HASH:" + hmac.new(b"pepper", b"user-42", hashlib.sha256).hexdigest()[:16] + "]",
        "crm.tenant.id": "acme", "plan": "trial",
        "crm.trace.sampled": True}  # sampling off: every trace is exported


def test_the_same_attributes_go_on_the_current_span(telemetry: CapturedTelemetry) -> None:
    with trace.get_tracer("t").start_as_current_span("POST /projects"):
        journey_milestone("onboarding", "first_project", subject_id=7, started_at=ago(minutes=2),
                          attributes={"crm.journey.name": "spoofed", "plan": "trial"})
    span = telemetry.span("POST /projects")
    assert span.attributes is not None
    assert span.attributes["crm.journey.name"] == "onboarding"  # ours win over the caller's
    assert span.attributes["crm.journey.milestone.name"] == "first_project"
    assert span.attributes["crm.journey.milestone.elapsed"] == 120.0
    assert span.attributes["crm.journey.milestone.over_target"] is False
    assert span.attributes["plan"] == "trial"
    assert str(span.attributes["crm.journey.subject.id"]).startswith("[HASH:")


def test_the_event_goes_through_the_scrubbing_pipeline_and_the_last_milestone_wins_on_the_span(
        telemetry: CapturedTelemetry) -> None:
    with trace.get_tracer("t").start_as_current_span("POST /signup"):
        journey_milestone("onboarding", "signed_up", subject_id="u", started_at=NOW,
                          attributes={"signup.note": "from ada@example.com"})
        journey_milestone("onboarding", "first_project", subject_id="u", started_at=ago(minutes=1))
    first, _ = events(telemetry)
    assert first.attributes["signup.note"] == "from [REDACTED:email]"
    span = telemetry.span("POST /signup")
    assert span.attributes is not None and span.attributes["crm.journey.milestone.name"] == "first_project"
    assert span.attributes["signup.note"] == "from [REDACTED:email]"


def test_metrics_by_journey_milestone_and_tenant_never_subject(telemetry: CapturedTelemetry) -> None:
    subjects = [f"user-{n}" for n in range(5)]
    with tenant_context("acme"):
        for subject in subjects:
            journey_milestone("onboarding", "signed_up", subject_id=subject, started_at=NOW)
            journey_milestone("onboarding", "first_project", subject_id=subject, started_at=ago(minutes=6))
        journey_milestone("onboarding", "first_success", subject_id="user-0", started_at=ago(minutes=50),
                          previous_at=ago(minutes=10))
    assert telemetry.metric_sum("crm.journey.starts") == 5
    assert telemetry.metric_sum("crm.journey.milestones", crm__journey__milestone__name="first_project") == 5
    assert telemetry.metric_sum("crm.journey.completions") == 1
    assert telemetry.metric_sum("crm.journey.over_target") == 5  # 6 min > the 5 min target
    elapsed = {labels(p)["crm.journey.milestone.name"]: p for p in points(telemetry, "crm.journey.elapsed")}
    assert elapsed["first_project"].count == 5 and elapsed["first_project"].sum == 5 * 360
    assert elapsed["signed_up"].count == 5 and elapsed["signed_up"].sum == 0
    assert list(elapsed["first_success"].explicit_bounds) == list(semconv.CRM_JOURNEY_BUCKETS)
    stage = points(telemetry, "crm.journey.stage.duration")
    assert {(labels(p)["crm.journey.milestone.name"], p.sum) for p in stage} == {("first_project", 1800.0),
                                                                               ("first_success", 600.0)}
    every = [p for name in JOURNEY_METRICS for p in points(telemetry, name)]
    assert every and all(set(labels(p)) <= {"crm.journey.name", "crm.journey.milestone.name", "crm.tenant.id",
                                            "crm.journey.anomaly"} for p in every)
    assert all(labels(p)["crm.tenant.id"] == "acme" for p in every)
    assert not any(s in str(labels(p)) for p in every for s in subjects)
    assert {name: telemetry.metric_unit(name) for name in JOURNEY_METRICS if points(telemetry, name)} == {
        "crm.journey.elapsed": "s", "crm.journey.stage.duration": "s", "crm.journey.milestones": "{milestone}",
        "crm.journey.starts": "{journey}", "crm.journey.completions": "{journey}",
        "crm.journey.over_target": "{milestone}", "crm.journey.efficiency": "1"}
    # starts and completions name the journey's first and last milestone: rules join them with elapsed.
    assert {labels(p)["crm.journey.milestone.name"] for p in points(telemetry, "crm.journey.completions")} == {
        "first_success"}


def test_declared_targets_are_a_gauge_for_dashboards(telemetry: CapturedTelemetry) -> None:
    journey_milestone("onboarding", "signed_up", subject_id="u", started_at=NOW)
    targets = {labels(p)["crm.journey.milestone.name"]: p.value for p in points(telemetry, "crm.journey.target")}
    assert targets == {"signed_up": 0, "first_project": 300, "first_agent": 900, "first_workflow": 1800,
                       "first_success": 3600}
    assert telemetry.metric_unit("crm.journey.target") == "s"


def test_targets_are_cumulative_and_reaching_one_exactly_is_on_time(telemetry: CapturedTelemetry) -> None:
    on_time = journey_milestone("onboarding", "first_workflow", subject_id="u", started_at=ago(minutes=30))
    late = journey_milestone("onboarding", "first_workflow", subject_id="u", started_at=ago(minutes=30, seconds=1))
    start = journey_milestone("onboarding", "signed_up", subject_id="u", started_at=ago(minutes=1))
    assert on_time is not None and late is not None and start is not None
    assert on_time.target_s == 1800 and not on_time.over_target and late.over_target
    assert start.target_s == 0 and not start.over_target and start.started  # the start is never late
    assert on_time.stage_s is None  # the previous milestone's time was not given


def test_the_second_milestone_s_stage_starts_at_started_at(telemetry: CapturedTelemetry) -> None:
    record = journey_milestone("onboarding", "first_project", subject_id="u", started_at=ago(minutes=3))
    assert record is not None and record.stage_s == record.elapsed_s == 180


@pytest.mark.parametrize(("minutes", "efficiency"), [(45, 1.0), (60, 1.0), (120, 0.5), (240, 0.25)])
def test_efficiency_at_completion(telemetry: CapturedTelemetry, minutes: int, efficiency: float) -> None:
    record = journey_milestone("onboarding", "first_success", subject_id="u", started_at=ago(minutes=minutes))
    assert record is not None and record.completed and record.efficiency == efficiency
    (point,) = points(telemetry, "crm.journey.efficiency")
    assert point.sum == efficiency and point.count == 1
    assert telemetry.metric_unit("crm.journey.efficiency") == "1"


def test_capture_user_id_keeps_the_subject_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journey_module, "_clock", NOW.timestamp)
    with capture_telemetry(journeys=ONBOARDING, capture_user_id=True) as telemetry:
        journey_milestone("onboarding", "signed_up", subject_id=" user-42\n", started_at=NOW)
        (event,) = events(telemetry)
    assert event.attributes["crm.journey.subject.id"] == "user-42"  # cleaned like header ids


def test_hashes_join_within_a_runtime_and_differ_by_subject(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journey_module, "_clock", NOW.timestamp)
    with capture_telemetry(journeys=ONBOARDING) as telemetry:  # no salt: a random per-process one
        for subject in ("a", "a", "b"):
            journey_milestone("onboarding", "signed_up", subject_id=subject, started_at=NOW)
        ids = [e.attributes["crm.journey.subject.id"] for e in events(telemetry)]
    assert ids[0] == ids[1] != ids[2] and all(re.fullmatch(r"\[HASH:[0-9a-f]{16}\]", i) for i in ids)


def test_tenants_on_metrics_go_through_the_cardinality_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journey_module, "_clock", NOW.timestamp)
    with capture_telemetry(journeys=ONBOARDING, tenant_metric_limit=1) as telemetry:
        for tenant in ("acme", "globex"):
            with tenant_context(tenant):
                journey_milestone("onboarding", "signed_up", subject_id="u", started_at=NOW)
        starts = {labels(p)["crm.tenant.id"] for p in points(telemetry, "crm.journey.starts")}
        overflow = telemetry.metric_sum("crm.metric.overflow", crm__metric__name="crm.journey.starts")
        tenants = [e.attributes["crm.tenant.id"] for e in events(telemetry)]
    assert starts == {"acme", "__other__"} and overflow == 1
    assert tenants == ["acme", "globex"]  # the event keeps the real tenant (not a metric label)


def test_metrics_and_event_do_not_depend_on_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journey_module, "_clock", NOW.timestamp)
    with capture_telemetry(journeys=ONBOARDING) as telemetry:
        with TracerProvider(sampler=ALWAYS_OFF).get_tracer("t").start_as_current_span("unsampled") as span:
            assert not span.is_recording()
            journey_milestone("onboarding", "signed_up", subject_id="u", started_at=NOW)
        assert telemetry.metric_sum("crm.journey.starts") == 1 and len(events(telemetry)) == 1


# --- bad and odd input ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("call", "error"), [
    (("offboarding", "signed_up", {}), "UnknownJourney"),
    (("onboarding", "first_lunch", {}), "UnknownMilestone"),
    ((None, "signed_up", {}), "UnknownJourney"),
    (("onboarding", 3, {}), "UnknownMilestone"),
    (("onboarding", "signed_up", {"subject_id": ""}), "InvalidJourneyCall"),
    (("onboarding", "signed_up", {"subject_id": None}), "InvalidJourneyCall"),
    (("onboarding", "signed_up", {"subject_id": True}), "InvalidJourneyCall"),
    (("onboarding", "signed_up", {"started_at": "2026-11-30T12:00:00Z"}), "InvalidJourneyCall"),
    (("onboarding", "first_agent", {"previous_at": 1764504000}), "InvalidJourneyCall"),
    (("onboarding", "signed_up", {"attributes": ["plan", "trial"]}), "InvalidJourneyCall"),
])
def test_calls_that_cannot_be_recorded_are_counted_and_record_nothing(
        telemetry: CapturedTelemetry, errors: Errors, call: tuple[Any, Any, dict[str, Any]], error: str) -> None:
    journey, milestone, kwargs = call
    arguments: dict[str, Any] = {"subject_id": "u", "started_at": NOW, **kwargs}
    assert journey_milestone(journey, milestone, **arguments) is None
    assert errors.seen == [("helpers.journey", error)]
    assert not any(points(telemetry, name) for name in JOURNEY_METRICS)  # never a new series
    assert events(telemetry) == []


def test_an_unknown_journey_is_raised_under_pytest(telemetry: CapturedTelemetry) -> None:
    with pytest.raises(journey_module.UnknownJourney, match="'offboarding' is not declared"):
        journey_milestone("offboarding", "signed_up", subject_id="u", started_at=NOW)
    with pytest.raises(journey_module.UnknownMilestone, match=r"signed_up, first_project, first_agent"):
        journey_milestone("onboarding", "nope", subject_id="u", started_at=NOW)


def test_nothing_is_declared_without_configuration(errors: Errors) -> None:
    with capture_telemetry() as telemetry:
        assert journey_milestone("onboarding", "signed_up", subject_id="u", started_at=NOW) is None
        assert telemetry.metric_points("crm.journey.milestones") == []
    assert errors.seen == [("helpers.journey", "UnknownJourney")]


def test_naive_datetimes_are_counted_then_read_as_utc(telemetry: CapturedTelemetry, errors: Errors) -> None:
    naive = ago(minutes=2).replace(tzinfo=None)
    record = journey_milestone("onboarding", "first_project", subject_id="u", started_at=naive)
    assert record is not None and record.elapsed_s == 120 and record.flags == ("naive_datetime",)
    assert errors.seen == [("helpers.journey", "NaiveDatetime")]
    assert telemetry.metric_sum("crm.journey.anomalies", crm__journey__anomaly="naive_datetime") == 1
    assert list(events(telemetry)[0].attributes["crm.journey.milestone.flags"]) == ["naive_datetime"]


def test_naive_datetimes_are_raised_under_pytest(telemetry: CapturedTelemetry) -> None:
    with pytest.raises(journey_module.NaiveDatetime):
        journey_milestone("onboarding", "signed_up", subject_id="u", started_at=datetime(2026, 11, 30))


def test_a_start_in_the_future_is_flagged_counted_once_and_never_a_negative_time(
        telemetry: CapturedTelemetry) -> None:
    record = journey_milestone("onboarding", "first_success", subject_id="u", started_at=NOW + timedelta(hours=2))
    assert record is not None and record.flags == ("started_in_future",)
    assert record.elapsed_s is None and not record.over_target and record.efficiency is None
    assert telemetry.metric_sum("crm.journey.milestones") == 1 and telemetry.metric_sum("crm.journey.completions") == 1
    assert points(telemetry, "crm.journey.elapsed") == [] and points(telemetry, "crm.journey.efficiency") == []
    assert telemetry.metric_sum("crm.journey.anomalies", crm__journey__anomaly="started_in_future") == 1
    (event,) = events(telemetry)
    assert "crm.journey.milestone.elapsed" not in event.attributes
    assert list(event.attributes["crm.journey.milestone.flags"]) == ["started_in_future"]


def test_a_milestone_before_its_predecessor_is_flagged_and_counted_once(telemetry: CapturedTelemetry) -> None:
    record = journey_milestone("onboarding", "first_workflow", subject_id="u", started_at=ago(minutes=20),
                               previous_at=NOW + timedelta(minutes=1))
    assert record is not None and record.flags == ("out_of_order",) and record.stage_s is None
    assert record.elapsed_s == 1200  # the journey's clock is still right
    assert telemetry.metric_sum("crm.journey.milestones") == 1
    assert points(telemetry, "crm.journey.stage.duration") == []
    assert telemetry.metric_sum("crm.journey.anomalies", crm__journey__anomaly="out_of_order") == 1


def test_up_to_a_second_ahead_is_clock_skew_not_an_anomaly(telemetry: CapturedTelemetry) -> None:
    skewed = NOW + timedelta(seconds=0.9)  # e.g. the database's now(), read by a host a bit behind
    record = journey_milestone("onboarding", "signed_up", subject_id="u", started_at=skewed)
    assert record is not None and record.flags == () and record.elapsed_s == 0
    record = journey_milestone("onboarding", "first_agent", subject_id="u", started_at=ago(minutes=9),
                               previous_at=skewed)
    assert record is not None and record.flags == () and record.stage_s == 0
    late = journey_milestone("onboarding", "signed_up", subject_id="u", started_at=NOW + timedelta(seconds=1.1))
    assert late is not None and late.flags == ("started_in_future",)


def test_a_predecessor_before_the_start_is_recorded_and_flagged(telemetry: CapturedTelemetry) -> None:
    record = journey_milestone("onboarding", "first_agent", subject_id="u", started_at=ago(minutes=10),
                               previous_at=ago(minutes=15))
    assert record is not None and record.flags == ("previous_before_start",) and record.stage_s == 900


def test_previous_at_is_ignored_for_the_start(telemetry: CapturedTelemetry) -> None:
    record = journey_milestone("onboarding", "signed_up", subject_id="u", started_at=NOW,
                               previous_at=NOW + timedelta(days=1))
    assert record is not None and record.flags == () and record.stage_s is None


def test_repeats_are_the_caller_s_to_avoid(telemetry: CapturedTelemetry) -> None:
    # Documented limit of a stateless helper: it cannot tell a repeat from a first time.
    for _ in range(2):
        journey_milestone("onboarding", "signed_up", subject_id="u", started_at=NOW)
    assert telemetry.metric_sum("crm.journey.starts") == 2


def test_an_export_failure_costs_neither_the_metrics_nor_business_code(
        telemetry: CapturedTelemetry, errors: Errors, monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenLogger:
        def emit(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("logger exploded")

    monkeypatch.setattr(journey_module, "_logger", lambda runtime: BrokenLogger())
    record = journey_milestone("onboarding", "signed_up", subject_id="u", started_at=NOW)
    assert record is not None and telemetry.metric_sum("crm.journey.starts") == 1
    assert errors.seen == [("helpers.journey", "RuntimeError")]


def test_a_metrics_failure_costs_neither_the_event_nor_business_code(
        telemetry: CapturedTelemetry, errors: Errors, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(runtime: Any) -> None:
        raise RuntimeError("instruments exploded")

    monkeypatch.setattr(journey_module, "_instruments", broken)
    assert journey_milestone("onboarding", "signed_up", subject_id="u", started_at=NOW) is not None
    assert len(events(telemetry)) == 1 and errors.seen == [("helpers.journey", "RuntimeError")]


def test_exported_from_the_package() -> None:
    assert otel_crm.journey_milestone is journey_milestone
    assert "journey_milestone" in otel_crm.__all__


def _doc_blocks() -> list[str]:
    text = (ROOT / "docs" / "journeys.md").read_text()
    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", text, re.S)]


def test_the_docs_have_runnable_examples() -> None:
    assert len(_doc_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(_doc_blocks())))
def test_docs_example_runs(index: int, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "OTEL_CRM_LOG_FORMAT": "none", "OTEL_TRACES_EXPORTER": "none",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", "HOME": str(tmp_path),
           "CRM_ROOT": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", _doc_blocks()[index]], capture_output=True, text=True,
                            timeout=120, cwd=ROOT, env=env)
    assert result.returncode == 0, f"docs/journeys.md example {index} failed:\n{result.stdout}\n{result.stderr}"
