"""search_query(): DB-convention spans and metric, query sanitizing."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from typing import Any

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
from otel_crm.helpers import sanitize_query, search_query
from otel_crm.helpers.search import MAX_QUERY_TEXT
from otel_crm.testing import CapturedTelemetry
from tests.support.metrics import collect

search_module = importlib.import_module("otel_crm.helpers.search")


DSL = {"query": {"bool": {"must": [{"match": {"email": "alice@example.com"}},
                                   {"range": {"score": {"gte": 80}}}],
                          "filter": {"terms": {"stage": ["lead", "mql"]}}}}, "size": 20}


def test_span_attributes_and_metric(telemetry: CapturedTelemetry) -> None:
    with search_query("leads", query=DSL) as search:
        search.set_results(12)

    span = telemetry.span("search leads")
    assert span.kind is SpanKind.CLIENT
    attributes = dict(span.attributes or {})
    query_text = attributes.pop(semconv.DB_QUERY_TEXT)
    assert attributes == {"db.system.name": "elasticsearch", "db.operation.name": "search",
                          "db.collection.name": "leads", "db.response.returned_rows": 12}
    assert json.loads(str(query_text)) == {
        "query": {"bool": {"must": [{"match": {"email": "?"}}, {"range": {"score": {"gte": "?"}}}],
                           "filter": {"terms": {"stage": ["?", "?"]}}}}, "size": "?"}

    metrics = collect(telemetry.metric_reader)
    duration = metrics["db.client.operation.duration"]
    assert duration.unit == "s"
    (point,) = duration.data.data_points
    assert tuple(point.explicit_bounds) == semconv.DB_CLIENT_OPERATION_DURATION_BUCKETS
    assert dict(point.attributes) == {"db.system.name": "elasticsearch", "db.operation.name": "search",
                                      "db.collection.name": "leads"}


async def test_async_and_decorator(telemetry: CapturedTelemetry) -> None:
    async with search_query("contacts", system="opensearch", query='name:"Bob" AND age:42') as search:
        await asyncio.sleep(0)
        search.set_results(0)

    @search_query("companies", system="postgresql", query="SELECT * FROM companies WHERE name = 'Acme'")
    def find() -> list[str]:
        return ["acme"]

    @search_query("deals")
    async def find_deals() -> list[str]:
        return []

    assert find() == ["acme"]
    assert await find_deals() == []
    contacts = telemetry.span("search contacts")
    assert contacts.attributes is not None
    assert contacts.attributes[semconv.DB_QUERY_TEXT] == "name:? AND age:?"
    assert contacts.attributes[semconv.DB_SYSTEM_NAME] == "opensearch"
    assert contacts.attributes[semconv.DB_RESPONSE_RETURNED_ROWS] == 0
    companies = telemetry.span("search companies")
    assert companies.attributes is not None
    assert companies.attributes[semconv.DB_QUERY_TEXT] == "SELECT * FROM companies WHERE name = ?"
    assert companies.attributes[semconv.CODE_FUNCTION_NAME].endswith("find")
    deals = telemetry.span("search deals")
    assert deals.attributes is not None and semconv.DB_QUERY_TEXT not in deals.attributes


def test_error_reraised_unchanged(telemetry: CapturedTelemetry) -> None:
    error = ConnectionRefusedError("es down")
    with pytest.raises(ConnectionRefusedError) as raised, search_query("leads"):
        raise error
    assert raised.value is error
    span = telemetry.span("search leads")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes[semconv.ERROR_TYPE] == "ConnectionRefusedError"
    (point,) = collect(telemetry.metric_reader)["db.client.operation.duration"].data.data_points
    assert point.attributes["error.type"] == "ConnectionRefusedError"


def test_tenant_on_metric(telemetry: CapturedTelemetry) -> None:
    with tenant_context("acme"), search_query("leads"):
        pass
    (point,) = collect(telemetry.metric_reader)["db.client.operation.duration"].data.data_points
    assert point.attributes[semconv.CRM_TENANT_ID] == "acme"


def test_unsampled_still_records_metric_and_skips_sanitizing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(search_module, "sanitize_query", lambda *a: calls.append(a) or "")
    reader = InMemoryMetricReader()
    previous = set_current_runtime(Runtime(
        settings=resolve_settings({}), tracer_provider=TracerProvider(sampler=ALWAYS_OFF),
        meter_provider=MeterProvider(metric_readers=[reader]), cardinality=TenantLabeler(100)))
    try:
        with search_query("leads", query=DSL) as search:
            search.set_results(3)
    finally:
        set_current_runtime(previous) if previous is not None else clear_current_runtime()
    assert calls == []
    assert collect(reader)["db.client.operation.duration"].data.data_points[0].count == 1


def test_internal_failure_never_reaches_business_code(telemetry: CapturedTelemetry,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> str:
        raise RuntimeError("sanitizer exploded")

    monkeypatch.setattr(search_module, "sanitize_query", broken)
    safety.reraise_internal_errors(False)
    try:
        with search_query("leads", query="x") as search:
            search.set_results(1)
            hits = [1]
        assert hits == [1]
    finally:
        safety.reraise_internal_errors(None)
    assert telemetry.span("search leads").attributes[semconv.DB_RESPONSE_RETURNED_ROWS] == 1  # type: ignore[index]


@pytest.mark.parametrize(("system", "query", "expected"), [
    ("postgresql", "SELECT id FROM leads WHERE email = 'a@b.c' AND score > 80.5 LIMIT 10",
     "SELECT id FROM leads WHERE email = ? AND score > ? LIMIT ?"),
    ("postgresql", "SELECT 'it''s', \"x\\\"y\" FROM t2", "SELECT ?, ? FROM t2"),
    ("mysql", "WHERE a IN (1, 2, 0x1F) AND col9 = -3", "WHERE a IN (?, ?, ?) AND col9 = -?"),
    ("postgresql", "WHERE name = 'unterminated", "WHERE name = ?"),
    ("elasticsearch", 'email:"alice@example.com" AND (stage:lead OR stage:mql)',
     "email:? AND (stage:? OR stage:?)"),
    ("elasticsearch", "age:[18 TO 30] AND NOT status:churned", "age:[? TO ?] AND NOT status:?"),
    ("elasticsearch", "john smith +acme -spam", "? ? +? -?"),
    ("elasticsearch", r"url:http\://x.io", "url:?"),
    ("elasticsearch", '{"query": {"term": {"owner": "u-17"}}}', '{"query":{"term":{"owner":"?"}}}'),
    ("opensearch", [{"match": {"name": "x"}}, 3], '[{"match":{"name":"?"}},"?"]'),
])
def test_sanitize_query(system: str, query: Any, expected: str) -> None:
    assert sanitize_query(query, system) == expected


def test_sanitize_is_bounded_and_linear() -> None:
    assert len(sanitize_query("a:" + "x " * 100_000)) <= MAX_QUERY_TEXT
    assert len(sanitize_query({"k" * 5000: 1})) <= MAX_QUERY_TEXT
    deep: Any = "leaf"
    for _ in range(500):
        deep = {"d": deep}
    assert sanitize_query(deep).count("?") == 1  # depth-capped, no RecursionError
    assert len(sanitize_query("[" * 100_000)) <= MAX_QUERY_TEXT  # too deep for json: sanitized as text
    assert sanitize_query("[" * 10 + "'secret'", "postgresql") == "[" * 10 + "?"
    # Pathological inputs for backtracking regexes finish quickly here.
    for text in ("'" + "\\'" * 200_000, '"' * 200_000, "1" * 400_000, "a" * 400_000 + "!"):
        start = time.perf_counter()
        sanitize_query(text, "postgresql")
        sanitize_query(text, "elasticsearch")
        assert time.perf_counter() - start < 1.0
