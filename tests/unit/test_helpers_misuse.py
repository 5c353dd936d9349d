"""The helpers validate at the boundary: a misuse corpus over every public helper call.

Each misuse (wrong type, None, NaN, inf, negative, huge, a string for a number, a bad name) must, in
production, become one counted internal error (``crm.internal.errors{crm.component,
error.type=InvalidArgumentError}``) plus ``crm.helper.invalid_argument`` on the span, and never an
exception in business code; under pytest the same misuse raises, by design (see safety).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from otel_crm._internal import safety, semconv
from otel_crm._internal.runtime import Runtime, clear_current_runtime, set_current_runtime
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import TenantLabeler
from otel_crm.helpers import (
    agent_invocation,
    connector_operation,
    instrument_connector_operation,
    instrument_sync_operation,
    load_price_table,
    sanitize_query,
    search_query,
    step,
    workflow,
)
from otel_crm.helpers._validate import MAX_COUNT, MAX_NAME_LENGTH, MAX_TOKENS, InvalidArgumentError
from otel_crm.testing import CapturedTelemetry

INVALID = semconv.CRM_HELPER_INVALID_ARGUMENT


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


class _Index:
    """An integer-like object (numpy.int64 and friends implement __index__)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


BAD_COUNTS: list[Any] = [None, "abc", "5", b"5", float("nan"), float("inf"), float("-inf"), -1, -0.5, 1.5,
                         10**20, MAX_COUNT + 1, True, [], {}, _Opaque(), complex(1, 0)]
BAD_TOKENS: list[Any] = [*(v for v in BAD_COUNTS if v != MAX_COUNT + 1), MAX_TOKENS + 1]
BAD_NAMES: list[Any] = [None, "", "   ", 123, 1.5, b"bytes", "x" * (MAX_NAME_LENGTH + 1), ["a"], _Opaque()]
BAD_OPTIONAL_NAMES: list[Any] = [v for v in BAD_NAMES if v is not None]


@dataclass(frozen=True)
class Misuse:
    """One bad call: `run` performs it inside business code; `argument` is what the span must name."""

    label: str
    run: Callable[[], object]
    argument: str
    component: str
    span: str | None  # the span that must carry the attribute (None: no span is started)


def _in_connector(action: Callable[[Any], object]) -> Callable[[], object]:
    def run() -> object:
        with connector_operation("hubspot", "sync") as op:
            action(op)
        return "business result"
    return run


def _in_search(action: Callable[[Any], object]) -> Callable[[], object]:
    def run() -> object:
        with search_query("leads") as search:
            action(search)
        return "business result"
    return run


def _in_agent(action: Callable[[Any], object]) -> Callable[[], object]:
    def run() -> object:
        with agent_invocation("openai", "gpt-4o") as call:
            action(call)
        return "business result"
    return run


def _with(helper: Callable[[], Any]) -> Callable[[], object]:
    def run() -> object:
        with helper():
            pass
        return "business result"
    return run


def _decorated(helper: Callable[[], Any]) -> Callable[[], object]:
    def run() -> object:
        @helper()
        def business() -> str:
            return "business result"
        return business()
    return run


def _corpus() -> list[Misuse]:
    cases: list[Misuse] = []
    for value in BAD_COUNTS:
        cases += [
            Misuse(f"set_records({value!r})", _in_connector(lambda op, v=value: op.set_records(v)),
                   "set_records.count", "helpers.connector", "sync hubspot"),
            Misuse(f"set_results({value!r})", _in_search(lambda s, v=value: s.set_results(v)),
                   "set_results.count", "helpers.search", "search leads"),
        ]
        if value is not None:  # index=None is the default: no index
            cases.append(Misuse(f"step(index={value!r})", _with(lambda v=value: step("s", index=v)),
                                "step.index", "helpers.workflow", "execute_step s"))
    for value in BAD_TOKENS:
        cases += [
            Misuse(f"record_usage({value!r}, 1)", _in_agent(lambda c, v=value: c.record_usage(v, 1)),
                   "record_usage.input_tokens", "helpers.agent", "chat gpt-4o"),
            Misuse(f"record_usage(1, {value!r})", _in_agent(lambda c, v=value: c.record_usage(1, v)),
                   "record_usage.output_tokens", "helpers.agent", "chat gpt-4o"),
        ]
    for value in BAD_OPTIONAL_NAMES:
        if value == "":  # an empty response model (some APIs send one) means none, as before
            continue
        cases.append(Misuse(f"record_usage(response_model={value!r})",
                            _in_agent(lambda c, v=value: c.record_usage(1, 1, response_model=v)),
                            "record_usage.response_model", "helpers.agent", "chat gpt-4o"))
    for value in BAD_NAMES:
        other = semconv_other = "_OTHER"
        cases += [
            Misuse(f"workflow({value!r})", _with(lambda v=value: workflow(v)), "workflow.name",
                   "helpers.workflow", f"execute_workflow {other}"),
            Misuse(f"@workflow({value!r})", _decorated(lambda v=value: workflow(v)), "workflow.name",
                   "helpers.workflow", f"execute_workflow {other}"),
            Misuse(f"step({value!r})", _with(lambda v=value: step(v)), "step.name", "helpers.workflow",
                   f"execute_step {other}"),
            Misuse(f"connector_operation({value!r}, 'sync')", _with(lambda v=value: connector_operation(v, "sync")),
                   "connector_operation.connector", "helpers.connector", f"sync {other}"),
            Misuse(f"connector_operation('hubspot', {value!r})",
                   _with(lambda v=value: connector_operation("hubspot", v)),
                   "connector_operation.operation", "helpers.connector", f"{other} hubspot"),
            Misuse(f"instrument_sync_operation({value!r})",
                   _decorated(lambda v=value: instrument_sync_operation(v, connector="hubspot")),
                   "instrument_sync_operation.resource_type", "helpers.connector", "sync hubspot"),
            Misuse(f"instrument_connector_operation({value!r})",
                   _decorated(lambda v=value: instrument_connector_operation(v, connector="hubspot")),
                   "instrument_connector_operation.operation", "helpers.connector", f"{other} hubspot"),
            Misuse(f"agent_invocation({value!r}, 'gpt-4o')", _with(lambda v=value: agent_invocation(v, "gpt-4o")),
                   "agent_invocation.provider", "helpers.agent", "chat gpt-4o"),
            Misuse(f"agent_invocation('openai', {value!r})", _with(lambda v=value: agent_invocation("openai", v)),
                   "agent_invocation.model", "helpers.agent", f"chat {semconv_other}"),
            Misuse(f"search_query({value!r})", _with(lambda v=value: search_query(v)), "search_query.index",
                   "helpers.search", f"search {other}"),
            Misuse(f"search_query(system={value!r})", _with(lambda v=value: search_query("leads", system=v)),
                   "search_query.system", "helpers.search", "search leads"),
        ]
    for value in BAD_OPTIONAL_NAMES:
        cases += [
            Misuse(f"workflow(trigger={value!r})", _with(lambda v=value: workflow("w", trigger=v)),
                   "workflow.trigger", "helpers.workflow", "execute_workflow w"),
            Misuse(f"connector_operation(resource_type={value!r})",
                   _with(lambda v=value: connector_operation("hubspot", "sync", resource_type=v)),
                   "connector_operation.resource_type", "helpers.connector", "sync hubspot"),
            Misuse(f"agent_invocation(operation={value!r})",
                   _with(lambda v=value: agent_invocation("openai", "gpt-4o", operation=v)),
                   "agent_invocation.operation", "helpers.agent", "chat gpt-4o"),
            Misuse(f"agent_invocation(agent_name={value!r})",
                   _with(lambda v=value: agent_invocation("openai", "gpt-4o", operation="chat", agent_name=v)),
                   "agent_invocation.agent_name", "helpers.agent", "chat gpt-4o"),
            Misuse(f"agent_invocation(agent_id={value!r})",
                   _with(lambda v=value: agent_invocation("openai", "gpt-4o", agent_id=v)),
                   "agent_invocation.agent_id", "helpers.agent", "chat gpt-4o"),
        ]
    for value in [None, 42, "not a function"]:
        cases.append(Misuse(f"@workflow('w')({value!r})", lambda v=value: (workflow("w")(v), "business result")[1],
                            "decorator.function", "helpers", None))
    return cases


CORPUS = _corpus()


def test_the_corpus_is_large_and_covers_every_public_helper_call() -> None:
    assert len(CORPUS) >= 100
    covered = {case.argument.split(".")[0] for case in CORPUS}
    assert covered >= {"set_records", "set_results", "record_usage", "step", "workflow", "connector_operation",
                       "instrument_sync_operation", "instrument_connector_operation", "agent_invocation",
                       "search_query", "decorator"}


class _CountingCounter:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def add(self, amount: int, attributes: dict[str, Any]) -> None:
        self.calls.append(dict(attributes))


@pytest.fixture
def internal_errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[_CountingCounter]:
    counter = _CountingCounter()
    monkeypatch.setattr(safety, "_counter", counter)
    yield counter


@pytest.mark.parametrize("case", CORPUS, ids=[case.label for case in CORPUS])
def test_misuse_in_production_is_counted_and_noted_never_raised(
        case: Misuse, telemetry: CapturedTelemetry, internal_errors: _CountingCounter, no_reraise: None) -> None:
    assert case.run() == "business result"
    assert internal_errors.calls == [{semconv.CRM_COMPONENT: case.component,
                                      semconv.ERROR_TYPE: "InvalidArgumentError"}]
    if case.span is not None:
        span = telemetry.span(case.span)
        assert tuple(span.attributes[INVALID]) == (case.argument,)  # type: ignore[index]


@pytest.mark.parametrize("case", CORPUS, ids=[case.label for case in CORPUS])
def test_misuse_under_pytest_raises_by_design(case: Misuse, telemetry: CapturedTelemetry) -> None:
    with pytest.raises(InvalidArgumentError, match=case.argument.replace(".", r"\(") + "="):
        case.run()


# --- what a rejected call leaves behind ------------------------------------------------------------
def test_a_huge_token_count_is_not_priced(telemetry: CapturedTelemetry, no_reraise: None) -> None:
    with agent_invocation("openai", "gpt-4o") as call:
        call.record_usage(10**20, 0)
        call.record_usage(1_000, 100)  # a later valid call still counts
    span = telemetry.span("chat gpt-4o")
    attributes = span.attributes or {}
    assert attributes["gen_ai.usage.input_tokens"] == 1_000
    assert attributes[semconv.CRM_GEN_AI_COST_AMOUNT] == pytest.approx((1_000 * 2.5 + 100 * 10.0) / 1e6)
    assert telemetry.metric_sum(semconv.CRM_GEN_AI_COST) == pytest.approx(0.0035)
    assert telemetry.metric_sum(semconv.GEN_AI_CLIENT_TOKEN_USAGE, gen_ai__token__type="input") == 1


def test_record_usage_is_all_or_nothing(telemetry: CapturedTelemetry, no_reraise: None) -> None:
    with agent_invocation("openai", "gpt-4o") as call:
        call.record_usage(500, None)  # type: ignore[arg-type]
    attributes = telemetry.span("chat gpt-4o").attributes or {}
    assert "gen_ai.usage.input_tokens" not in attributes
    assert semconv.CRM_GEN_AI_COST_AMOUNT not in attributes
    assert telemetry.metric_points(semconv.CRM_GEN_AI_COST) == []


def test_the_limits_themselves_are_valid(telemetry: CapturedTelemetry) -> None:
    with agent_invocation("openai", "gpt-4o") as call:
        call.record_usage(MAX_TOKENS, 0)
        call.record_usage(0, MAX_TOKENS)
    with connector_operation("hubspot", "sync") as op:
        op.set_records(MAX_COUNT)
    with search_query("leads") as search:
        search.set_results(0)
    with step("x" * MAX_NAME_LENGTH, index=0):
        pass
    attributes = telemetry.span("chat gpt-4o").attributes or {}
    assert attributes["gen_ai.usage.input_tokens"] == MAX_TOKENS
    assert attributes["gen_ai.usage.output_tokens"] == MAX_TOKENS
    assert telemetry.span("sync hubspot").attributes["crm.connector.records"] == MAX_COUNT  # type: ignore[index]
    assert all(INVALID not in (s.attributes or {}) for s in telemetry.spans())


def test_integral_numbers_of_other_types_are_accepted(telemetry: CapturedTelemetry) -> None:
    with connector_operation("hubspot", "sync") as op:
        op.set_records(7.0)
    with search_query("leads") as search:
        search.set_results(_Index(3))  # type: ignore[arg-type]
    with step("s", index=_Index(2)):  # type: ignore[arg-type]
        pass
    assert telemetry.span("sync hubspot").attributes["crm.connector.records"] == 7  # type: ignore[index]
    assert telemetry.span("search leads").attributes["db.response.returned_rows"] == 3  # type: ignore[index]
    assert telemetry.span("execute_step s").attributes["crm.workflow.step.index"] == 2  # type: ignore[index]


def test_several_misuses_on_one_span_are_listed_once_each(telemetry: CapturedTelemetry, no_reraise: None,
                                                         internal_errors: _CountingCounter) -> None:
    with connector_operation("hubspot", "sync") as op:
        op.set_records(None)  # type: ignore[arg-type]
        op.set_records("x")  # type: ignore[arg-type]
        op.set_records(12)
    with agent_invocation("openai", "gpt-4o") as call:
        call.record_usage(-1, 0)
        call.record_usage(0, -1)
    assert tuple(telemetry.span("sync hubspot").attributes[INVALID]) == ("set_records.count",)  # type: ignore[index]
    assert telemetry.span("sync hubspot").attributes["crm.connector.records"] == 12  # type: ignore[index]
    assert tuple(telemetry.span("chat gpt-4o").attributes[INVALID]) == (  # type: ignore[index]
        "record_usage.input_tokens", "record_usage.output_tokens")
    assert len(internal_errors.calls) == 4, "each misuse is counted, even when the span lists it once"


def test_a_misused_helper_object_notes_every_span_it_starts(telemetry: CapturedTelemetry, no_reraise: None,
                                                           internal_errors: _CountingCounter) -> None:
    bad = step("s", index="first")  # type: ignore[arg-type]
    with bad:
        pass
    with bad:
        pass
    spans = [s for s in telemetry.spans() if s.name == "execute_step s"]
    assert len(spans) == 2 and all(tuple(s.attributes[INVALID]) == ("step.index",)  # type: ignore[index]
                                   for s in spans)
    assert "crm.workflow.step.index" not in (spans[0].attributes or {})
    assert len(internal_errors.calls) == 1, "counted once: one bad call"


def test_an_unsampled_span_still_counts_the_misuse(no_reraise: None, internal_errors: _CountingCounter) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    previous = set_current_runtime(Runtime(settings=resolve_settings({}), tracer_provider=provider,
                                           meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
                                           cardinality=TenantLabeler(100)))
    try:
        with connector_operation("hubspot", "sync") as op:
            assert not op.span.is_recording()
            op.set_records(math.nan)
    finally:
        if previous is not None:
            set_current_runtime(previous)
        else:
            clear_current_runtime()
    assert internal_errors.calls == [{semconv.CRM_COMPONENT: "helpers.connector",
                                      semconv.ERROR_TYPE: "InvalidArgumentError"}]


def test_the_value_is_never_logged(no_reraise: None, caplog: pytest.LogCaptureFixture,
                                   telemetry: CapturedTelemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safety, "_seen", {})  # one line per (component, type) and process: reset
    with connector_operation("hubspot", "sync") as op:
        op.set_records("jane@example.com")  # type: ignore[arg-type]
    assert "jane@example.com" not in caplog.text
    assert "set_records(count=str of 16 characters) at " + __file__ + ":" in caplog.text, "names the caller"


# --- public utility functions never raise --------------------------------------------------------
@pytest.mark.parametrize("system", [None, 123, [], {"a": 1}, "postgresql", ""])
@pytest.mark.parametrize("query", [None, 42, 1.5, b"\xff\xfe", "SELECT 1", {"a": [1, {"b": None}]}, _Opaque()])
def test_sanitize_query_never_raises(query: Any, system: Any) -> None:
    assert isinstance(sanitize_query(query, system), str)


@pytest.mark.parametrize("path", [123, 0, 1.5, b"\x00", ["prices.json"], object()])
def test_a_price_file_path_of_the_wrong_type_is_refused(path: Any, caplog: pytest.LogCaptureFixture) -> None:
    table = load_price_table(path)
    assert table.price("openai", "gpt-4o") is not None
    assert "OTEL_CRM_PRICING_FILE" in caplog.text


@pytest.mark.parametrize("tokens", [None, "5", -1, float("nan"), 1.5, True])
def test_price_table_cost_of_invalid_tokens_is_none(tokens: Any) -> None:
    table = load_price_table()
    assert table.cost("openai", "gpt-4o", tokens, 0) is None
    assert table.cost("openai", "gpt-4o", 0, tokens) is None
    assert table.cost("openai", "gpt-4o", 1_000_000, 0) == pytest.approx(2.5)
