"""workflow() / step(): spans, attributes and metrics exactly per our conventions."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from otel_crm._internal import safety, semconv
from otel_crm._internal.runtime import Runtime, clear_current_runtime, set_current_runtime
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import TenantLabeler, tenant_context
from otel_crm.helpers import step, workflow
from otel_crm.testing import CapturedTelemetry
from tests.support.metrics import collect

# `otel_crm.helpers.workflow` is the function (the package re-exports it); the module is here:
workflow_module = importlib.import_module("otel_crm.helpers.workflow")


class LeadNotFound(Exception):
    pass


@pytest.fixture
def unsampled() -> Iterator[InMemoryMetricReader]:
    """A runtime whose head sampler drops every span (non-recording path)."""
    reader = InMemoryMetricReader()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    previous = set_current_runtime(Runtime(settings=resolve_settings({}), tracer_provider=provider,
                                           meter_provider=MeterProvider(metric_readers=[reader]),
                                           cardinality=TenantLabeler(100)))
    yield reader
    if previous is not None:
        set_current_runtime(previous)
    else:
        clear_current_runtime()


def test_context_manager_span_names_kinds_and_attributes(telemetry: CapturedTelemetry) -> None:
    with workflow("enrich_lead", execution_id="run-42", trigger="webhook") as run:
        with step("fetch_company", index=0):
            pass
        with step("score", index=1):
            pass
        assert run.actions == 2

    wf = telemetry.span("execute_workflow enrich_lead")
    assert wf.kind is SpanKind.INTERNAL
    assert wf.attributes is not None
    assert {k: wf.attributes[k] for k in (semconv.CRM_WORKFLOW_NAME, semconv.CRM_WORKFLOW_EXECUTION_ID,
                                          semconv.CRM_WORKFLOW_TRIGGER, semconv.CRM_WORKFLOW_ACTIONS)} == {
        "crm.workflow.name": "enrich_lead", "crm.workflow.execution_id": "run-42",
        "crm.workflow.trigger": "webhook", "crm.workflow.actions": 2}
    assert semconv.CODE_FUNCTION_NAME not in wf.attributes
    assert wf.status.status_code is StatusCode.UNSET

    fetch = telemetry.span("execute_step fetch_company")
    assert fetch.kind is SpanKind.INTERNAL
    assert fetch.parent is not None and fetch.parent.span_id == wf.context.span_id
    assert fetch.attributes is not None
    assert fetch.attributes[semconv.CRM_WORKFLOW_STEP_NAME] == "fetch_company"
    assert fetch.attributes[semconv.CRM_WORKFLOW_STEP_INDEX] == 0
    assert fetch.attributes[semconv.CRM_WORKFLOW_NAME] == "enrich_lead"


def test_metrics_names_units_buckets_and_no_execution_id(telemetry: CapturedTelemetry) -> None:
    with workflow("enrich_lead", execution_id="run-42", trigger="api"), step("score"):
        pass

    metrics = collect(telemetry.metric_reader)
    duration = metrics["crm.workflow.duration"]
    assert duration.unit == "s"
    (point,) = duration.data.data_points
    assert tuple(point.explicit_bounds) == semconv.CRM_DURATION_BUCKETS
    assert dict(point.attributes) == {"crm.workflow.name": "enrich_lead", "crm.workflow.outcome": "success"}
    assert point.count == 1

    executions = metrics["crm.workflow.executions"]
    assert executions.unit == "{execution}"
    (point,) = executions.data.data_points
    assert point.value == 1
    assert dict(point.attributes) == {"crm.workflow.name": "enrich_lead", "crm.workflow.outcome": "success"}

    step_duration = metrics["crm.workflow.step.duration"]
    assert step_duration.unit == "s"
    (point,) = step_duration.data.data_points
    assert tuple(point.explicit_bounds) == semconv.CRM_DURATION_BUCKETS
    assert dict(point.attributes) == {"crm.workflow.name": "enrich_lead", "crm.workflow.step.name": "score",
                                      "crm.workflow.outcome": "success"}

    for metric in metrics.values():
        for point in metric.data.data_points:
            assert semconv.CRM_WORKFLOW_EXECUTION_ID not in point.attributes
            assert semconv.CRM_WORKFLOW_TRIGGER not in point.attributes


async def test_async_context_manager_and_decorators(telemetry: CapturedTelemetry) -> None:
    @step("draft_email", index=2)
    async def draft() -> str:
        await asyncio.sleep(0)
        return "draft"

    @workflow("campaign_send", trigger="schedule")
    async def send(n: int) -> list[str]:
        return [await draft() for _ in range(n)]

    assert await send(3) == ["draft"] * 3
    async with workflow("nightly"):
        await asyncio.sleep(0)

    wf = telemetry.span("execute_workflow campaign_send")
    assert wf.attributes is not None
    assert wf.attributes[semconv.CODE_FUNCTION_NAME] == f"{__name__}.{send.__qualname__}"
    assert wf.attributes[semconv.CRM_WORKFLOW_ACTIONS] == 3
    drafts = [s for s in telemetry.spans() if s.name == "execute_step draft_email"]
    assert len(drafts) == 3
    assert all(s.attributes and s.attributes[semconv.CODE_FUNCTION_NAME].endswith("draft") for s in drafts)
    assert all(s.parent and s.parent.span_id == wf.context.span_id for s in drafts)
    assert telemetry.span("execute_workflow nightly").attributes[semconv.CRM_WORKFLOW_ACTIONS] == 0  # type: ignore[index]


def test_sync_decorator_keeps_metadata_and_return_value(telemetry: CapturedTelemetry) -> None:
    @workflow("qualify_lead")
    def qualify(lead_id: int, *, strict: bool = False) -> dict[str, int]:
        """Qualify a lead."""
        return {"lead": lead_id}

    assert qualify(7, strict=True) == {"lead": 7}
    assert qualify.__name__ == "qualify" and qualify.__doc__ == "Qualify a lead."
    assert telemetry.span("execute_workflow qualify_lead").attributes[  # type: ignore[index]
        semconv.CODE_FUNCTION_NAME] == f"{__name__}.{qualify.__qualname__}"


def test_error_is_reraised_unchanged_and_recorded(telemetry: CapturedTelemetry) -> None:
    error = LeadNotFound("lead 7")
    with pytest.raises(LeadNotFound) as raised, workflow("enrich_lead"), step("fetch"):
        raise error
    assert raised.value is error
    assert raised.traceback[-1].name == "test_error_is_reraised_unchanged_and_recorded"

    expected_type = f"{__name__}.LeadNotFound"
    for name in ("execute_workflow enrich_lead", "execute_step fetch"):
        span = telemetry.span(name)
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes[semconv.ERROR_TYPE] == expected_type
        (event,) = span.events
        assert event.name == "exception" and event.attributes is not None
        # The SDK's record_exception() adds the deprecated exception.escaped (as the string 'True'):
        # exactly the registry's attributes, nothing else.
        assert set(event.attributes) == {semconv.EXCEPTION_TYPE, semconv.EXCEPTION_MESSAGE,
                                         semconv.EXCEPTION_STACKTRACE}
        assert event.attributes[semconv.EXCEPTION_TYPE] == expected_type
        assert event.attributes[semconv.EXCEPTION_MESSAGE] == "lead 7"
        assert "raise error" in str(event.attributes[semconv.EXCEPTION_STACKTRACE])

    metrics = collect(telemetry.metric_reader)
    (point,) = metrics["crm.workflow.executions"].data.data_points
    assert dict(point.attributes) == {"crm.workflow.name": "enrich_lead", "crm.workflow.outcome": "failure",
                                      "error.type": expected_type}
    (point,) = metrics["crm.workflow.step.duration"].data.data_points
    assert point.attributes["crm.workflow.outcome"] == "failure"
    assert point.attributes["error.type"] == expected_type


async def test_async_decorator_error_is_reraised_unchanged(telemetry: CapturedTelemetry) -> None:
    error = ValueError("bad payload")

    @workflow("import_contacts")
    async def run() -> None:
        raise error

    with pytest.raises(ValueError) as raised:
        await run()
    assert raised.value is error
    span = telemetry.span("execute_workflow import_contacts")
    assert span.attributes is not None and span.attributes[semconv.ERROR_TYPE] == "ValueError"


def test_tenant_on_metrics(telemetry: CapturedTelemetry) -> None:
    with tenant_context("acme"), workflow("enrich_lead"), step("score"):
        pass
    metrics = collect(telemetry.metric_reader)
    for name in ("crm.workflow.duration", "crm.workflow.executions", "crm.workflow.step.duration"):
        (point,) = metrics[name].data.data_points
        assert point.attributes[semconv.CRM_TENANT_ID] == "acme"
    assert telemetry.span("execute_workflow enrich_lead").attributes[  # type: ignore[index]
        semconv.CRM_TENANT_ID] == "acme"


def test_reentrant_object_and_nested_workflows(telemetry: CapturedTelemetry) -> None:
    outer = workflow("outer")
    with outer:
        with step("a"):
            pass
        with workflow("inner"), step("b"), step("c"):
            pass
    with outer:
        pass
    outers = [s for s in telemetry.spans() if s.name == "execute_workflow outer"]
    assert sorted(s.attributes[semconv.CRM_WORKFLOW_ACTIONS] for s in outers) == [0, 1]  # type: ignore[index]
    assert telemetry.span("execute_workflow inner").attributes[  # type: ignore[index]
        semconv.CRM_WORKFLOW_ACTIONS] == 2


def test_unsampled_span_still_records_metrics(unsampled: InMemoryMetricReader) -> None:
    with workflow("enrich_lead", execution_id="x") as run, step("score"):
        assert not run.span.is_recording()
    metrics = collect(unsampled)
    assert metrics["crm.workflow.executions"].data.data_points[0].value == 1
    assert metrics["crm.workflow.step.duration"].data.data_points[0].count == 1


def test_internal_failure_never_reaches_business_code(telemetry: CapturedTelemetry,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(runtime: Runtime) -> None:
        raise RuntimeError("instrument exploded")

    monkeypatch.setattr(workflow_module, "_instruments", broken)
    safety.reraise_internal_errors(False)
    try:
        with workflow("enrich_lead"):
            result = 41 + 1
        assert result == 42

        @workflow("decorated")
        def decorated() -> str:
            return "ok"

        assert decorated() == "ok"
        error = KeyError("k")
        with pytest.raises(KeyError) as raised, workflow("failing"):
            raise error
        assert raised.value is error
    finally:
        safety.reraise_internal_errors(None)
    # The span side still worked.
    assert telemetry.span("execute_workflow enrich_lead").attributes is not None


def test_start_failure_still_runs_business_code(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Runtime:
        raise RuntimeError("no runtime")

    monkeypatch.setattr("otel_crm.helpers._base.current_runtime", broken)
    safety.reraise_internal_errors(False)
    try:
        with workflow("enrich_lead") as run:
            run.span.set_attribute("x", 1)  # the handle still works
        assert step("s")(lambda: 5)() == 5
    finally:
        safety.reraise_internal_errors(None)


def test_internal_failure_reraises_under_pytest(telemetry: CapturedTelemetry,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(runtime: Runtime) -> None:
        raise RuntimeError("instrument exploded")

    monkeypatch.setattr(workflow_module, "_instruments", broken)
    with pytest.raises(RuntimeError, match="instrument exploded"), workflow("enrich_lead"):
        pass


def test_metrics_are_recorded_in_the_context_around_the_workflow(telemetry: CapturedTelemetry) -> None:
    """Exemplars (trace_based, the SDK default) point at the span around the workflow: the context
    read once for all of an operation's measurements is the one the SDK would read for each."""
    with telemetry.runtime.tracer("test").start_as_current_span("request") as parent:
        with workflow("exemplar_check", execution_id="run-1"):
            pass
    for metric in (semconv.CRM_WORKFLOW_DURATION, semconv.CRM_WORKFLOW_EXECUTIONS):
        exemplars = [e for p in telemetry.metric_points(metric) for e in p.exemplars]
        assert exemplars, metric
        assert {e.span_id for e in exemplars} == {parent.get_span_context().span_id}, metric
