"""agent_invocation(): GenAI spans, token/duration metrics, cost, message capture."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from otel_crm._internal import safety, semconv
from otel_crm._internal.runtime import Runtime, clear_current_runtime, set_current_runtime
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import TenantLabeler, tenant_context
from otel_crm.helpers import agent_invocation
from otel_crm.testing import CapturedTelemetry, capture_telemetry
from tests.support.metrics import collect

agent_module = importlib.import_module("otel_crm.helpers.agent")


class FakeScrubber:
    def scrub_text(self, text: str) -> str:
        return text.replace("alice@example.com", "[EMAIL]")


def test_chat_span_attributes_and_cost(telemetry: CapturedTelemetry) -> None:
    with agent_invocation("openai", "gpt-4o") as call:
        call.record_usage(1_000_000, 100_000, response_model="gpt-4o-2024-08-06")

    span = telemetry.span("chat gpt-4o")
    assert span.kind is SpanKind.CLIENT
    attributes = dict(span.attributes or {})
    assert attributes.pop(semconv.CRM_GEN_AI_COST_AMOUNT) == pytest.approx(2.5 + 1.0)
    attributes.pop(semconv.CRM_TENANT_ID, None)
    assert attributes == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 1_000_000, "gen_ai.usage.output_tokens": 100_000,
        "crm.gen_ai.cost.currency": "USD"}
    assert semconv.GEN_AI_INPUT_MESSAGES not in attributes


def test_metrics_names_units_buckets(telemetry: CapturedTelemetry) -> None:
    with agent_invocation("anthropic", "claude-sonnet-4") as call:
        call.record_usage(300, 20)
        call.record_usage(200, 30, response_model="claude-sonnet-4-20250514")

    metrics = collect(telemetry.metric_reader)
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4", "gen_ai.response.model": "claude-sonnet-4-20250514"}
    duration = metrics["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    (point,) = duration.data.data_points
    assert tuple(point.explicit_bounds) == semconv.GEN_AI_DURATION_BUCKETS
    assert dict(point.attributes) == base

    tokens = metrics["gen_ai.client.token.usage"]
    assert tokens.unit == "{token}"
    by_type = {p.attributes["gen_ai.token.type"]: p for p in tokens.data.data_points}
    assert by_type["input"].sum == 500 and by_type["output"].sum == 50
    assert tuple(by_type["input"].explicit_bounds) == semconv.GEN_AI_TOKEN_BUCKETS
    assert dict(by_type["output"].attributes) == {**base, "gen_ai.token.type": "output"}

    cost = metrics["crm.gen_ai.cost"]
    assert cost.unit == "{USD}"
    (point,) = cost.data.data_points
    assert point.value == pytest.approx((500 * 3.0 + 50 * 15.0) / 1e6)
    assert dict(point.attributes) == {**base, "crm.gen_ai.cost.currency": "USD"}


async def test_agent_invocation_is_internal_invoke_agent(telemetry: CapturedTelemetry) -> None:
    async with agent_invocation("perplexity", "sonar-pro", agent_name="researcher",
                                agent_id="agent-7") as run:
        await asyncio.sleep(0)
        run.record_usage(10, 5)
    span = telemetry.span("invoke_agent researcher")
    assert span.kind is SpanKind.INTERNAL
    assert span.attributes is not None
    assert span.attributes[semconv.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert span.attributes[semconv.GEN_AI_AGENT_NAME] == "researcher"
    assert span.attributes[semconv.GEN_AI_AGENT_ID] == "agent-7"
    assert span.attributes[semconv.GEN_AI_REQUEST_MODEL] == "sonar-pro"
    metrics = collect(telemetry.metric_reader)
    point = metrics["gen_ai.client.operation.duration"].data.data_points[0]
    assert point.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert semconv.GEN_AI_AGENT_NAME not in point.attributes


def test_explicit_operation_with_agent_name_keeps_operation(telemetry: CapturedTelemetry) -> None:
    with agent_invocation("openai", "gpt-4.1", operation="chat", agent_name="writer"):
        pass
    span = telemetry.span("chat gpt-4.1")
    assert span.kind is SpanKind.CLIENT
    assert span.attributes is not None and span.attributes[semconv.GEN_AI_AGENT_NAME] == "writer"


async def test_decorators(telemetry: CapturedTelemetry) -> None:
    @agent_invocation("openai", "gpt-4o-mini", operation="embeddings")
    def embed(text: str) -> list[float]:
        return [0.0]

    @agent_invocation("anthropic", "claude-3-5-haiku", agent_name="triage")
    async def triage() -> str:
        return "hot"

    assert embed("x") == [0.0]
    assert await triage() == "hot"
    assert telemetry.span("embeddings gpt-4o-mini").attributes[  # type: ignore[index]
        semconv.CODE_FUNCTION_NAME].endswith("embed")
    telemetry.span("invoke_agent triage")


def test_unknown_model_has_no_cost(telemetry: CapturedTelemetry) -> None:
    with agent_invocation("openai", "my-finetune") as call:
        call.record_usage(10, 10)
    with agent_invocation("acme-llm", "gpt-4o") as call:  # price tables are per provider
        call.record_usage(10, 10)
    for span in telemetry.spans():
        assert span.attributes is not None
        assert semconv.CRM_GEN_AI_COST_AMOUNT not in span.attributes
        assert semconv.CRM_GEN_AI_COST_CURRENCY not in span.attributes
    assert "crm.gen_ai.cost" not in collect(telemetry.metric_reader)


def test_no_usage_no_token_metrics(telemetry: CapturedTelemetry) -> None:
    with agent_invocation("openai", "gpt-4o"):
        pass
    metrics = collect(telemetry.metric_reader)
    assert "gen_ai.client.token.usage" not in metrics and "crm.gen_ai.cost" not in metrics
    assert metrics["gen_ai.client.operation.duration"].data.data_points[0].count == 1


def test_error_reraised_unchanged_usage_still_counted(telemetry: CapturedTelemetry) -> None:
    error = TimeoutError("provider timed out")
    with pytest.raises(TimeoutError) as raised, agent_invocation("openai", "gpt-4o") as call:
        call.record_usage(100, 0)
        raise error
    assert raised.value is error
    span = telemetry.span("chat gpt-4o")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes[semconv.ERROR_TYPE] == "TimeoutError"
    metrics = collect(telemetry.metric_reader)
    (point,) = metrics["gen_ai.client.operation.duration"].data.data_points
    assert point.attributes["error.type"] == "TimeoutError"
    token_points = metrics["gen_ai.client.token.usage"].data.data_points
    assert all("error.type" not in p.attributes for p in token_points)
    assert metrics["crm.gen_ai.cost"].data.data_points[0].value == pytest.approx(100 * 2.5 / 1e6)


def test_tenant_on_metrics(telemetry: CapturedTelemetry) -> None:
    with tenant_context("acme"), agent_invocation("openai", "gpt-4o") as call:
        call.record_usage(1, 1)
    metrics = collect(telemetry.metric_reader)
    for name in ("gen_ai.client.operation.duration", "gen_ai.client.token.usage", "crm.gen_ai.cost"):
        for point in metrics[name].data.data_points:
            assert point.attributes[semconv.CRM_TENANT_ID] == "acme"


def test_messages_absent_by_default(telemetry: CapturedTelemetry) -> None:
    with agent_invocation("openai", "gpt-4o") as call:
        call.record_messages("hello alice@example.com", "hi")
    attributes = telemetry.span("chat gpt-4o").attributes or {}
    assert semconv.GEN_AI_INPUT_MESSAGES not in attributes
    assert semconv.GEN_AI_OUTPUT_MESSAGES not in attributes


@pytest.fixture
def capturing() -> Iterator[CapturedTelemetry]:
    with capture_telemetry(capture_message_content=True) as telemetry:
        telemetry.runtime.scrubber = FakeScrubber()
        yield telemetry


def test_messages_recorded_and_scrubbed_when_enabled(capturing: CapturedTelemetry) -> None:
    with agent_invocation("openai", "gpt-4o") as call:
        call.record_messages(
            [{"role": "system", "content": "You qualify leads."},
             {"role": "user", "content": "Score alice@example.com"}],
            "Lead alice@example.com: 87")
    attributes = capturing.span("chat gpt-4o").attributes or {}
    inputs = json.loads(str(attributes[semconv.GEN_AI_INPUT_MESSAGES]))
    assert inputs == [
        {"role": "system", "parts": [{"type": "text", "content": "You qualify leads."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Score [EMAIL]"}]}]
    outputs = json.loads(str(attributes[semconv.GEN_AI_OUTPUT_MESSAGES]))
    assert outputs == [{"role": "assistant", "parts": [{"type": "text", "content": "Lead [EMAIL]: 87"}]}]
    assert "alice@example.com" not in json.dumps(dict(attributes))


def test_unsampled_still_records_metrics() -> None:
    reader = InMemoryMetricReader()
    previous = set_current_runtime(Runtime(
        settings=resolve_settings({}, capture_message_content=True),
        tracer_provider=TracerProvider(sampler=ALWAYS_OFF),
        meter_provider=MeterProvider(metric_readers=[reader]), cardinality=TenantLabeler(100)))
    try:
        with agent_invocation("openai", "gpt-4o") as call:
            call.record_usage(10, 20)
            call.record_messages("skipped: span not recording")
    finally:
        set_current_runtime(previous) if previous is not None else clear_current_runtime()
    metrics = collect(reader)
    assert {p.attributes["gen_ai.token.type"]: p.sum
            for p in metrics["gen_ai.client.token.usage"].data.data_points} == {"input": 10, "output": 20}
    assert metrics["crm.gen_ai.cost"].data.data_points[0].value > 0


def test_internal_failure_never_reaches_business_code(telemetry: CapturedTelemetry,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(runtime: Runtime) -> None:
        raise RuntimeError("price table exploded")

    monkeypatch.setattr(agent_module, "_prices", broken)
    safety.reraise_internal_errors(False)
    try:
        with agent_invocation("openai", "gpt-4o") as call:
            call.record_usage(1, 1)
            answer = "42"
        assert answer == "42"
    finally:
        safety.reraise_internal_errors(None)
    assert telemetry.span("chat gpt-4o").attributes is not None
