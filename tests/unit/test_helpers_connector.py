"""connector_operation() and the connector decorators."""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from otel_crm._internal import safety, semconv
from otel_crm._internal.runtime import Runtime, clear_current_runtime, set_current_runtime
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import TenantLabeler, tenant_context
from otel_crm.helpers import connector_operation, instrument_connector_operation, instrument_sync_operation
from otel_crm.helpers.connector import connector_name_of, count_records
from otel_crm.testing import CapturedTelemetry
from tests.support.metrics import collect

connector_module = importlib.import_module("otel_crm.helpers.connector")


class HubSpotConnector:
    @instrument_sync_operation("contacts")
    def sync_contacts(self, n: int) -> list[int]:
        return list(range(n))

    @instrument_connector_operation("push")
    async def push(self, batch: list[int]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"count": len(batch)}

    @instrument_sync_operation("deals", connector="hubspot-eu")
    def sync_deals(self) -> dict[str, Any]:
        return {"items": ["d1", "d2"]}


class WordPressClient:
    connector_name = "wordpress"

    @instrument_sync_operation("posts")
    def sync_posts(self) -> Iterator[int]:
        yield 1  # a generator's records are the items it yields


def test_context_manager_span_and_metrics(telemetry: CapturedTelemetry) -> None:
    with connector_operation("hubspot", "sync", resource_type="contacts") as op:
        op.set_records(25)

    span = telemetry.span("sync hubspot")
    assert span.kind is SpanKind.INTERNAL
    assert dict(span.attributes or {}) == {
        "service.peer.name": "hubspot", "crm.connector.operation": "sync",
        "crm.connector.resource_type": "contacts", "crm.connector.records": 25}

    metrics = collect(telemetry.metric_reader)
    base = {"service.peer.name": "hubspot", "crm.connector.operation": "sync",
            "crm.connector.resource_type": "contacts"}
    duration = metrics["crm.connector.duration"]
    assert duration.unit == "s"
    (point,) = duration.data.data_points
    assert tuple(point.explicit_bounds) == semconv.CRM_DURATION_BUCKETS
    assert dict(point.attributes) == {**base, "crm.connector.outcome": "success"}
    operations = metrics["crm.connector.operations"]
    assert operations.unit == "{operation}"
    assert dict(operations.data.data_points[0].attributes) == {**base, "crm.connector.outcome": "success"}
    records = metrics["crm.connector.records.synced"]
    assert records.unit == "{record}"
    (point,) = records.data.data_points
    assert point.value == 25 and dict(point.attributes) == base


async def test_async_context_manager(telemetry: CapturedTelemetry) -> None:
    async with connector_operation("wordpress", "push") as op:
        await asyncio.sleep(0)
        op.set_records(3)
    span = telemetry.span("push wordpress")
    assert span.attributes is not None and span.attributes[semconv.CRM_CONNECTOR_RECORDS] == 3
    assert semconv.CRM_CONNECTOR_RESOURCE_TYPE not in span.attributes


async def test_decorators_count_records_and_name_connectors(telemetry: CapturedTelemetry) -> None:
    hubspot = HubSpotConnector()
    assert hubspot.sync_contacts(4) == [0, 1, 2, 3]
    assert await hubspot.push([1, 2]) == {"count": 2}
    assert hubspot.sync_deals() == {"items": ["d1", "d2"]}
    assert list(WordPressClient().sync_posts()) == [1]

    sync = telemetry.span("sync hubspot")
    assert sync.attributes is not None
    assert sync.attributes[semconv.CRM_CONNECTOR_RECORDS] == 4
    assert sync.attributes[semconv.CRM_CONNECTOR_RESOURCE_TYPE] == "contacts"
    assert sync.attributes[semconv.CODE_FUNCTION_NAME] == f"{__name__}.HubSpotConnector.sync_contacts"
    assert telemetry.span("push hubspot").attributes[semconv.CRM_CONNECTOR_RECORDS] == 2  # type: ignore[index]
    assert telemetry.span("sync hubspot-eu").attributes[semconv.CRM_CONNECTOR_RECORDS] == 2  # type: ignore[index]
    assert telemetry.span("sync wordpress").attributes[semconv.CRM_CONNECTOR_RECORDS] == 1  # type: ignore[index]

    metrics = collect(telemetry.metric_reader)
    synced = {(p.attributes["service.peer.name"], p.attributes["crm.connector.operation"]): p.value
              for p in metrics["crm.connector.records.synced"].data.data_points}
    assert synced == {("hubspot", "sync"): 4, ("hubspot", "push"): 2, ("hubspot-eu", "sync"): 2,
                      ("wordpress", "sync"): 1}


def test_plain_function_uses_module_name(telemetry: CapturedTelemetry) -> None:
    @instrument_connector_operation("fetch", connector="perplexity")
    def fetch() -> list[str]:
        return ["a"]

    @instrument_connector_operation("fetch")
    def fetch_unnamed() -> None:
        return None

    fetch()
    fetch_unnamed()
    assert telemetry.span("fetch perplexity").attributes[semconv.CRM_CONNECTOR_RECORDS] == 1  # type: ignore[index]
    # A plain function: its module's last component, without a `_connector` suffix, names it.
    assert __name__.rsplit(".", 1)[-1] == "test_helpers_connector"
    telemetry.span("fetch test_helpers")


def test_connector_name_rules() -> None:
    class SalesforceClient:
        pass

    class Named:
        name = "zapier"

    assert connector_name_of(HubSpotConnector()) == "hubspot"
    assert connector_name_of(SalesforceClient) == "salesforce"
    assert connector_name_of(WordPressClient()) == "wordpress"
    assert connector_name_of(Named()) == "zapier"


@pytest.mark.parametrize(("value", "expected"), [
    ([1, 2, 3], 3), ((1,), 1), ({1, 2}, 2), ({"records": [1, 2]}, 2), ({"items": (1,)}, 1),
    ({"count": 7}, 7), ({"other": 1}, None), ({"count": True}, None), ("abc", None), (b"ab", None),
    (None, None), (5, None), (iter([1]), None),
])
def test_count_records(value: Any, expected: int | None) -> None:
    assert count_records(value) == expected


def test_error_reraised_unchanged_with_failure_metrics(telemetry: CapturedTelemetry) -> None:
    error = ConnectionError("hubspot down")

    class Flaky:
        @instrument_sync_operation("contacts", connector="hubspot")
        def sync(self) -> list[int]:
            raise error

    with pytest.raises(ConnectionError) as raised:
        Flaky().sync()
    assert raised.value is error
    span = telemetry.span("sync hubspot")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes[semconv.ERROR_TYPE] == "ConnectionError"
    assert [e.name for e in span.events] == ["exception"]
    metrics = collect(telemetry.metric_reader)
    (point,) = metrics["crm.connector.operations"].data.data_points
    assert point.attributes["crm.connector.outcome"] == "failure"
    assert point.attributes["error.type"] == "ConnectionError"
    assert "crm.connector.records.synced" not in metrics


def test_tenant_on_every_metric(telemetry: CapturedTelemetry) -> None:
    with tenant_context("acme"), connector_operation("hubspot", "sync") as op:
        op.set_records(1)
    metrics = collect(telemetry.metric_reader)
    for name in ("crm.connector.duration", "crm.connector.operations", "crm.connector.records.synced"):
        assert metrics[name].data.data_points[0].attributes[semconv.CRM_TENANT_ID] == "acme"


def test_unsampled_still_records_metrics() -> None:
    reader = InMemoryMetricReader()
    previous = set_current_runtime(Runtime(
        settings=resolve_settings({}), tracer_provider=TracerProvider(sampler=ALWAYS_OFF),
        meter_provider=MeterProvider(metric_readers=[reader]), cardinality=TenantLabeler(100)))
    try:
        with connector_operation("hubspot", "sync") as op:
            op.set_records(10)
            assert not op.span.is_recording()
    finally:
        set_current_runtime(previous) if previous is not None else clear_current_runtime()
    metrics = collect(reader)
    assert metrics["crm.connector.records.synced"].data.data_points[0].value == 10
    assert metrics["crm.connector.operations"].data.data_points[0].value == 1


def test_internal_failure_never_reaches_business_code(telemetry: CapturedTelemetry,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding:
        def __init__(self) -> None:
            self.duration = self.operations = self.records = self

        def record(self, *args: Any) -> None:
            raise RuntimeError("histogram exploded")

        add = record

    monkeypatch.setattr(connector_module, "_instruments", lambda runtime: Exploding())
    safety.reraise_internal_errors(False)
    try:
        assert HubSpotConnector().sync_contacts(2) == [0, 1]
        with connector_operation("hubspot", "sync") as op:
            op.set_records(1)
    finally:
        safety.reraise_internal_errors(None)
    assert len([s for s in telemetry.spans() if s.name == "sync hubspot"]) == 2


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"results": [1, 2]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def local_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_http_client_spans_are_children_of_the_connector_span(telemetry: CapturedTelemetry,
                                                               local_server: str) -> None:
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.runtime.tracer_provider)
    try:
        class CrmClient:
            @instrument_sync_operation("contacts")
            def sync(self) -> list[int]:
                response = requests.get(f"{local_server}/contacts", timeout=5)
                response.raise_for_status()
                return list(response.json()["results"])

        assert CrmClient().sync() == [1, 2]
    finally:
        instrumentor.uninstrument()

    connector_span = telemetry.span("sync crm")
    http_spans = [s for s in telemetry.spans() if s.kind is SpanKind.CLIENT]
    assert len(http_spans) == 1
    assert http_spans[0].parent is not None
    assert http_spans[0].parent.span_id == connector_span.context.span_id
    assert http_spans[0].context.trace_id == connector_span.context.trace_id


async def test_one_shared_object_across_concurrent_tasks(telemetry: CapturedTelemetry) -> None:
    sync = connector_operation("hubspot", "sync")  # defined once, entered by many tasks
    release = asyncio.Event()

    async def task(n: int) -> None:
        async with sync as op:
            await release.wait()  # every task is inside the block at the same time
            await asyncio.sleep(0.002 * n)  # and they leave in the order they entered (not LIFO)
            op.set_records(n)

    tasks = [asyncio.create_task(task(n)) for n in range(1, 5)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    spans = [s for s in telemetry.spans() if s.name == "sync hubspot"]
    assert sorted(s.attributes[semconv.CRM_CONNECTOR_RECORDS] for s in spans) == [1, 2, 3, 4]  # type: ignore[index]
    for span in spans:  # each span ended after its own task set its records
        assert span.end_time is not None and span.parent is None


async def test_task_spawned_inside_a_shared_block_finishes_its_own_operation(
        telemetry: CapturedTelemetry) -> None:
    push = connector_operation("hubspot", "push")

    async def child() -> None:
        async with push as op:
            op.set_records(2)

    async with push as outer:
        outer.set_records(1)
        await asyncio.create_task(child())  # the child's context is a copy of this one
        assert outer.span.is_recording()  # still ours, not finished by the child
    assert sorted(s.attributes[semconv.CRM_CONNECTOR_RECORDS]  # type: ignore[index]
                  for s in telemetry.spans() if s.name == "push hubspot") == [1, 2]


def test_class_names_are_memoised_within_a_budget() -> None:
    names = connector_module._class_names
    for i in range(3 * names.limit):
        owner = type(f"Shop{i}Connector", (), {})()
        assert connector_name_of(owner) == f"shop{i}"
        assert len(names) <= names.limit
    named = type("PlainClient", (), {"name": "custom"})()  # an instance's own name still wins
    assert connector_name_of(named) == "custom"


def test_plain_collections_are_counted_like_any_sized_result() -> None:
    assert [count_records(value) for value in ([1, 2], (1,), {1, 2, 3}, frozenset(), "abc", b"x")] == [
        2, 1, 3, 0, None, None]
