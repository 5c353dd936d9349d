"""Business journeys: time-to-first-value milestones, as an event, metrics and span attributes.

``journey_milestone("onboarding", "first_project", subject_id=user.id, started_at=user.signed_up_at,
previous_at=user.signed_up_at)`` — stateless: the app says when the journey started (and, when it
knows, when the previous milestone happened); otel_crm keeps nothing per subject. Journeys are
declared once (see :mod:`otel_crm._internal.journeys` and ``docs/journeys.md``).

Each call records, for a declared journey and milestone only (nothing else ever becomes a label):

- a log record with ``event.name`` ``crm.journey.milestone`` (the journey, milestone, seconds since
  the start and since the previous milestone, cumulative target, over-target, completed, tenant,
  the subject id — hashed unless user-id capture is on — and any anomaly flags), in the current
  trace;
- metrics by ``crm.journey.name``, ``crm.journey.milestone.name`` and the guarded ``crm.tenant.id``,
  never by subject: ``crm.journey.elapsed`` and ``crm.journey.stage.duration`` (s),
  ``crm.journey.milestones``, ``crm.journey.starts``, ``crm.journey.completions``,
  ``crm.journey.over_target``, ``crm.journey.efficiency`` (score per completion),
  ``crm.journey.anomalies`` (by ``crm.journey.anomaly``) and the gauge ``crm.journey.target``
  (declared cumulative targets, for dashboards);
- the same attributes on the current span (when it is recording).

Bad input never raises in business code: an unknown journey or milestone, a wrong type or an
empty subject is a counted internal error and records nothing; a naive datetime is a counted
internal error and is then read as UTC (flag ``naive_datetime``). Timestamps that contradict each
other are recorded and flagged (see :data:`FLAGS`). Under pytest internal errors are re-raised.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import Logger, SeverityNumber, get_logger_provider
from opentelemetry.metrics import CallbackOptions, Observation

from otel_crm._internal import semconv
from otel_crm._internal.journeys import Journey, journeys_from_settings
from otel_crm._internal.runtime import Runtime, current_runtime
from otel_crm._internal.safety import report_internal_error
from otel_crm._internal.scrubbing import _random_salt
from otel_crm._internal.tenancy import clean_tenant_id, current_tenant
from otel_crm.helpers._base import Attributes, PerRuntime, metric_attributes

__all__ = [
    "FLAGS",
    "InvalidJourneyCall",
    "MilestoneRecord",
    "NaiveDatetime",
    "UnknownJourney",
    "UnknownMilestone",
    "journey_milestone",
]

COMPONENT = "helpers.journey"
_clock: Callable[[], float] = time.time  # wall clock: compared with the app's datetimes
NAIVE_DATETIME = "naive_datetime"
STARTED_IN_FUTURE = "started_in_future"
OUT_OF_ORDER = "out_of_order"
PREVIOUS_BEFORE_START = "previous_before_start"
FLAGS: tuple[str, ...] = (NAIVE_DATETIME, STARTED_IN_FUTURE, OUT_OF_ORDER, PREVIOUS_BEFORE_START)
# A timestamp at most this far ahead of our clock is clock skew (a database server's now() read by
# an app host a few milliseconds behind), not an anomaly: the duration is read as 0.
CLOCK_SKEW_S = 1.0
"""Anomaly flags a milestone can carry (``crm.journey.milestone.flags``, ``crm.journey.anomaly``):

- ``naive_datetime``: a datetime without tzinfo, read as UTC;
- ``started_in_future``: ``started_at`` is more than :data:`CLOCK_SKEW_S` later than now — no
  elapsed time is recorded (it would be negative), the milestone is still counted;
- ``out_of_order``: ``previous_at`` is more than :data:`CLOCK_SKEW_S` later than now (the milestone
  came before its predecessor) — no stage duration is recorded, the milestone is counted once;
- ``previous_before_start``: ``previous_at`` is earlier than ``started_at`` — recorded as given.
"""


class InvalidJourneyCall(ValueError):
    """A journey_milestone call otel_crm cannot record (counted as an internal error)."""


class UnknownJourney(InvalidJourneyCall):
    pass


class UnknownMilestone(InvalidJourneyCall):
    pass


class NaiveDatetime(InvalidJourneyCall):
    pass


@dataclass(frozen=True, slots=True)
class MilestoneRecord:
    """What one call recorded (``journey_milestone`` returns it; None when it recorded nothing)."""

    journey: str
    milestone: str
    index: int
    elapsed_s: float | None  # None when started_at is in the future
    stage_s: float | None  # None when the previous milestone's time is unknown or later than now
    target_s: float
    over_target: bool
    started: bool  # the journey's first milestone
    completed: bool  # the journey's last milestone
    efficiency: float | None  # at completion: min(1, total target / elapsed)
    flags: tuple[str, ...]


class _Instruments:
    __slots__ = ("anomalies", "completions", "efficiency", "elapsed", "milestones", "over_target",
                 "stage", "starts", "target")

    def __init__(self, runtime: Runtime) -> None:
        meter = runtime.meter()
        targets = [Observation(m.target_s, {semconv.CRM_JOURNEY_NAME: j.name,
                                            semconv.CRM_JOURNEY_MILESTONE_NAME: m.name})
                   for j in _journeys(runtime).values() for m in j.milestones]

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return targets

        # Dashboards draw elapsed times against this; constant while the process lives.
        self.target = meter.create_observable_gauge(
            semconv.CRM_JOURNEY_TARGET, callbacks=[observe], unit="s",
            description="Declared cumulative target of each journey milestone.")
        buckets = list(semconv.CRM_JOURNEY_BUCKETS)
        self.elapsed = meter.create_histogram(
            semconv.CRM_JOURNEY_ELAPSED, unit="s", explicit_bucket_boundaries_advisory=buckets,
            description="Time from the journey's start to each milestone.")
        self.stage = meter.create_histogram(
            semconv.CRM_JOURNEY_STAGE_DURATION, unit="s", explicit_bucket_boundaries_advisory=buckets,
            description="Time from the previous milestone to this one.")
        self.efficiency = meter.create_histogram(
            semconv.CRM_JOURNEY_EFFICIENCY, unit="1",
            explicit_bucket_boundaries_advisory=list(semconv.CRM_JOURNEY_EFFICIENCY_BUCKETS),
            description="Per completed journey: min(1, total target / time to complete).")
        self.milestones = meter.create_counter(
            semconv.CRM_JOURNEY_MILESTONES, unit="{milestone}", description="Milestones reached.")
        self.starts = meter.create_counter(
            semconv.CRM_JOURNEY_STARTS, unit="{journey}", description="Journeys started (first milestone).")
        self.completions = meter.create_counter(
            semconv.CRM_JOURNEY_COMPLETIONS, unit="{journey}",
            description="Journeys completed (last milestone).")
        self.over_target = meter.create_counter(
            semconv.CRM_JOURNEY_OVER_TARGET, unit="{milestone}",
            description="Milestones reached later than their cumulative target.")
        self.anomalies = meter.create_counter(
            semconv.CRM_JOURNEY_ANOMALIES, unit="{milestone}",
            description="Milestones recorded with an anomaly flag, by crm.journey.anomaly.")


_instruments: PerRuntime[_Instruments] = PerRuntime("otel_crm.helpers.journey", _Instruments)
_journeys: PerRuntime[dict[str, Journey]] = PerRuntime(
    "otel_crm.helpers.journeys", lambda runtime: journeys_from_settings(runtime.settings))
_logger: PerRuntime[Logger] = PerRuntime(
    "otel_crm.helpers.journey.logger",
    lambda runtime: (runtime.logger_provider or get_logger_provider()).get_logger("otel_crm"))


def _subject_hasher(runtime: Runtime) -> Callable[[str], str]:
    if runtime.settings.capture_user_id:
        return lambda subject: subject
    # Same marker and key as the scrubber's hash mode: equal ids join, the scrubber leaves it alone.
    salt = runtime.settings.scrub_salt
    key = hmac.new(salt.encode("utf-8") if salt else _random_salt(), digestmod=hashlib.sha256)

    def hashed(subject: str) -> str:
        digest = key.copy()
        digest.update(subject.encode("utf-8", "surrogatepass"))
        return f"[HASH:{digest.hexdigest()[:16]}]"

    return hashed


_hasher: PerRuntime[Callable[[str], str]] = PerRuntime("otel_crm.helpers.journey.subject", _subject_hasher)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _timestamp(value: object, argument: str, flags: list[str]) -> float:
    if not isinstance(value, datetime):
        raise InvalidJourneyCall(f"{argument} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        if NAIVE_DATETIME not in flags:
            flags.append(NAIVE_DATETIME)
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def _evaluate(journey: Journey | None, journey_name: object, milestone_name: object, *, subject_id: object,
              started_at: object, previous_at: object, attributes: object, now: float
              ) -> tuple[MilestoneRecord, str]:
    """The record of one call (pure: no telemetry), and the cleaned subject id."""
    if journey is None:
        raise UnknownJourney(f"journey {_short(journey_name)} is not declared: declare it with "
                             "configure(journeys=...), OTEL_CRM_JOURNEYS or OTEL_CRM_JOURNEYS_FILE")
    milestone = journey.milestone(milestone_name) if isinstance(milestone_name, str) else None
    if milestone is None:
        raise UnknownMilestone(f"milestone {_short(milestone_name)} is not declared in journey "
                               f"{journey.name!r} ({', '.join(m.name for m in journey.milestones)})")
    subject = (clean_tenant_id(subject_id)
               if isinstance(subject_id, (str, int)) and not isinstance(subject_id, bool) else None)
    if subject is None:
        raise InvalidJourneyCall(f"subject_id must be a non-empty str or int, not {_short(subject_id)}")
    if attributes is not None and not isinstance(attributes, Mapping):
        raise InvalidJourneyCall(f"attributes must be a mapping, not {type(attributes).__name__}")
    flags: list[str] = []
    start = _timestamp(started_at, "started_at", flags)
    previous = None if previous_at is None else _timestamp(previous_at, "previous_at", flags)
    if previous is None and milestone.index == 1:
        previous = start  # the first milestone is the start: its time is started_at
    elapsed: float | None = max(0.0, now - start)
    if start - now > CLOCK_SKEW_S:
        flags.append(STARTED_IN_FUTURE)
        elapsed = None
    stage: float | None = None
    if milestone.index > 0 and previous is not None:
        if previous - now > CLOCK_SKEW_S:
            flags.append(OUT_OF_ORDER)
        else:
            stage = max(0.0, now - previous)
            if previous < start:
                flags.append(PREVIOUS_BEFORE_START)
    completed = milestone is journey.last
    efficiency = None
    if completed and elapsed is not None:
        efficiency = 1.0 if elapsed <= journey.total_target_s else journey.total_target_s / elapsed
    over = milestone.index > 0 and elapsed is not None and elapsed > milestone.target_s
    return MilestoneRecord(journey.name, milestone.name, milestone.index, elapsed, stage, milestone.target_s,
                           over, milestone.index == 0, completed, efficiency, tuple(flags)), subject


def journey_milestone(journey: str, milestone: str, *, subject_id: str | int, started_at: datetime,
                      previous_at: datetime | None = None,
                      attributes: Mapping[str, Any] | None = None) -> MilestoneRecord | None:
    """Record that ``subject_id`` reached ``milestone`` of ``journey`` now.

    ``started_at``: when the journey started (e.g. the user's signup time, from your database);
    timezone-aware. ``previous_at``: when the subject reached the milestone before this one, if
    you know it (for the second milestone it defaults to ``started_at``). ``attributes``: extra
    attributes for the event and the span (never for metrics).

    Call it once per subject and milestone — when your app first records the milestone (otel_crm
    keeps no per-subject state and cannot tell a repeat from a first time). Returns what was
    recorded, or None when nothing was (see the module docstring).
    """
    now = _clock()
    try:
        runtime = current_runtime()
        declared = _journeys(runtime).get(journey) if isinstance(journey, str) else None
        record, subject = _evaluate(declared, journey, milestone, subject_id=subject_id,
                                    started_at=started_at, previous_at=previous_at,
                                    attributes=attributes, now=now)
    except Exception as exc:
        report_internal_error(COMPONENT, exc)
        return None
    if NAIVE_DATETIME in record.flags:  # counted (raised under pytest), then recorded as UTC
        report_internal_error(COMPONENT, NaiveDatetime("started_at/previous_at must be timezone-aware; read as UTC"))
    tenant = current_tenant()
    tenant_id = tenant.id if tenant is not None else None
    # Independent stages: a failure in one never costs the others.
    failure: Exception | None = None
    try:
        _record_metrics(runtime, record, tenant_id)
    except Exception as exc:
        failure = exc
    try:
        _emit(runtime, record, subject=subject, tenant_id=tenant_id, extra=attributes, now=now)
    except Exception as exc:
        failure = failure or exc
    if failure is not None:
        report_internal_error(COMPONENT, failure)
    return record


def _emit(runtime: Runtime, record: MilestoneRecord, *, subject: str, tenant_id: str | None,
          extra: Mapping[str, Any] | None, now: float) -> None:
    """The event, and the same attributes on the current span."""
    attributes: Attributes = dict(extra) if extra else {}
    attributes.update({
        semconv.CRM_JOURNEY_NAME: record.journey,
        semconv.CRM_JOURNEY_MILESTONE_NAME: record.milestone,
        semconv.CRM_JOURNEY_MILESTONE_INDEX: record.index,
        semconv.CRM_JOURNEY_MILESTONE_TARGET: record.target_s,
        semconv.CRM_JOURNEY_MILESTONE_OVER_TARGET: record.over_target,
        semconv.CRM_JOURNEY_COMPLETED: record.completed,
        semconv.CRM_JOURNEY_SUBJECT_ID: _hasher(runtime)(subject),
    })
    if record.elapsed_s is not None:
        attributes[semconv.CRM_JOURNEY_MILESTONE_ELAPSED] = record.elapsed_s
    if record.stage_s is not None:
        attributes[semconv.CRM_JOURNEY_MILESTONE_STAGE_DURATION] = record.stage_s
    if record.flags:
        attributes[semconv.CRM_JOURNEY_MILESTONE_FLAGS] = record.flags
    if tenant_id is not None:
        attributes[semconv.CRM_TENANT_ID] = tenant_id
    failure: Exception | None = None
    try:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(attributes)
    except Exception as exc:
        failure = exc
    _logger(runtime).emit(timestamp=int(now * 1e9), severity_number=SeverityNumber.INFO,
                          severity_text="INFO", event_name=semconv.CRM_JOURNEY_MILESTONE_EVENT,
                          body=f"journey {record.journey}: {record.milestone}", attributes=attributes)
    if failure is not None:
        raise failure


def _record_metrics(runtime: Runtime, record: MilestoneRecord, tenant_id: str | None) -> None:
    instruments = _instruments(runtime)
    base: Attributes = {semconv.CRM_JOURNEY_NAME: record.journey,
                        semconv.CRM_JOURNEY_MILESTONE_NAME: record.milestone}

    def labels(metric: str) -> Attributes:  # each metric has its own tenant budget
        return metric_attributes(runtime, metric, base, tenant_id)

    instruments.milestones.add(1, labels(semconv.CRM_JOURNEY_MILESTONES))
    if record.started:
        instruments.starts.add(1, labels(semconv.CRM_JOURNEY_STARTS))
    if record.completed:
        instruments.completions.add(1, labels(semconv.CRM_JOURNEY_COMPLETIONS))
    if record.elapsed_s is not None:
        instruments.elapsed.record(record.elapsed_s, labels(semconv.CRM_JOURNEY_ELAPSED))
    if record.stage_s is not None:
        instruments.stage.record(record.stage_s, labels(semconv.CRM_JOURNEY_STAGE_DURATION))
    if record.over_target:
        instruments.over_target.add(1, labels(semconv.CRM_JOURNEY_OVER_TARGET))
    if record.efficiency is not None:
        instruments.efficiency.record(record.efficiency, labels(semconv.CRM_JOURNEY_EFFICIENCY))
    for flag in record.flags:
        flagged = labels(semconv.CRM_JOURNEY_ANOMALIES)
        flagged[semconv.CRM_JOURNEY_ANOMALY] = flag
        instruments.anomalies.add(1, flagged)
