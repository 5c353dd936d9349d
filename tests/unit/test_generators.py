"""Decorated generators: the span (or tenant) covers the iteration, is current only while the
generator runs, and the generator behaves exactly as it would undecorated."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from otel_crm import current_tenant, tenant_context, workflow
from otel_crm._internal import semconv
from otel_crm.helpers import instrument_sync_operation
from otel_crm.testing import CapturedTelemetry
from tests.support.metrics import collect


def current_span_name() -> str | None:
    return getattr(trace.get_current_span(), "name", None)


class Pages:
    connector_name = "hubspot"

    def __init__(self) -> None:
        self.seen_inside: list[str | None] = []

    @instrument_sync_operation("contacts")
    def pull(self, pages: int) -> Iterator[str]:
        for page in range(pages):
            self.seen_inside.append(current_span_name())
            yield f"contact-{page}"


def test_span_covers_the_iteration_and_counts_yielded_records(telemetry: CapturedTelemetry) -> None:
    pages = Pages()
    seen_by_consumer = []
    with trace.get_tracer("t").start_as_current_span("GET /sync"):
        for _ in pages.pull(3):
            seen_by_consumer.append(current_span_name())
    assert pages.seen_inside == ["sync hubspot"] * 3, "the generator runs under its span"
    assert seen_by_consumer == ["GET /sync"] * 3, "its consumer never sees that span as current"
    span = telemetry.span("sync hubspot")
    assert span.parent is not None and span.parent.span_id == telemetry.span("GET /sync").context.span_id
    assert span.attributes[semconv.CRM_CONNECTOR_RECORDS] == 3  # type: ignore[index]
    synced = collect(telemetry.metric_reader)["crm.connector.records.synced"].data.data_points
    assert [p.value for p in synced] == [3]


def test_nothing_starts_until_the_first_item_is_asked_for(telemetry: CapturedTelemetry) -> None:
    created = Pages().pull(2)
    assert telemetry.spans() == []
    del created
    gc.collect()
    assert telemetry.spans() == [], "a generator never started records nothing"


def test_error_inside_the_generator_marks_the_span_and_propagates(telemetry: CapturedTelemetry) -> None:
    class Broken(Exception):
        pass

    @instrument_sync_operation("posts", connector="wordpress")
    def posts() -> Iterator[int]:
        yield 1
        raise Broken("page 2 failed")

    seen = []
    with pytest.raises(Broken):
        for post in posts():
            seen.append(post)
    assert seen == [1]
    span = telemetry.span("sync wordpress")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE].endswith("Broken")  # type: ignore[index]
    assert span.attributes[semconv.CRM_CONNECTOR_RECORDS] == 1  # type: ignore[index]


def test_consumer_stopping_early_is_not_a_failure(telemetry: CapturedTelemetry) -> None:
    cleaned_up = []

    @workflow("import.contacts")
    def contacts() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            cleaned_up.append(current_span_name())

    for number in contacts():
        if number == 2:
            break
    gc.collect()
    assert cleaned_up == ["execute_workflow import.contacts"], "its cleanup still runs under its span"
    assert telemetry.span("execute_workflow import.contacts").status.status_code is not StatusCode.ERROR


def test_send_throw_and_return_value_pass_through(telemetry: CapturedTelemetry) -> None:
    @workflow("running.total")
    def running_total() -> Generator[int, int, str]:
        total = 0
        while True:
            try:
                received = yield total
            except ValueError:
                return f"stopped at {total}"
            total += received

    def consume() -> Generator[int, int, str]:
        result = yield from running_total()
        return result

    gen = consume()
    assert next(gen) == 0
    assert gen.send(5) == 5
    assert gen.send(2) == 7
    with pytest.raises(StopIteration) as stop:
        gen.throw(ValueError())
    assert stop.value.value == "stopped at 7"
    assert telemetry.span("execute_workflow running.total").status.status_code is not StatusCode.ERROR


async def test_async_generators_too(telemetry: CapturedTelemetry) -> None:
    inside: list[str | None] = []

    @instrument_sync_operation("contacts", connector="hubspot")
    async def stream() -> AsyncIterator[int]:
        for number in range(3):
            await asyncio.sleep(0)
            inside.append(current_span_name())
            yield number

    outside = []
    async for _ in stream():
        outside.append(current_span_name())
    assert inside == ["sync hubspot"] * 3
    assert outside == [None] * 3
    assert telemetry.span("sync hubspot").attributes[semconv.CRM_CONNECTOR_RECORDS] == 3  # type: ignore[index]


async def test_async_generator_asend_and_athrow(telemetry: CapturedTelemetry) -> None:
    @workflow("echo")
    async def echo() -> Any:
        received = None
        while True:
            try:
                received = yield received
            except KeyError:
                yield "caught"

    gen = echo()
    assert await gen.asend(None) is None
    assert await gen.asend("x") == "x"
    assert await gen.athrow(KeyError()) == "caught"
    await gen.aclose()
    assert telemetry.span("execute_workflow echo").status.status_code is not StatusCode.ERROR


def test_tenant_context_on_a_generator_does_not_leak_to_its_consumer() -> None:
    @tenant_context("acme")
    def rows() -> Iterator[str | None]:
        for _ in range(2):
            tenant = current_tenant()
            yield tenant.id if tenant else None

    consumer_saw = []
    produced = []
    with tenant_context("globex"):
        for tenant_id in rows():
            produced.append(tenant_id)
            tenant = current_tenant()
            consumer_saw.append(tenant.id if tenant else None)
    assert produced == ["acme", "acme"]
    assert consumer_saw == ["globex", "globex"]


async def test_tenant_context_on_an_async_generator() -> None:
    @tenant_context("acme")
    async def rows() -> AsyncIterator[str | None]:
        tenant = current_tenant()
        yield tenant.id if tenant else None

    assert [tenant_id async for tenant_id in rows()] == ["acme"]
    assert current_tenant() is None


def test_what_the_body_attaches_survives_its_yields(telemetry: CapturedTelemetry) -> None:
    seen: list[object] = []

    @workflow("import.contacts")
    def contacts() -> Iterator[int]:
        with trace.get_tracer("t").start_as_current_span("page"), tenant_context("acme"):
            for number in range(2):
                tenant = current_tenant()
                seen.append((current_span_name(), tenant.id if tenant else None))
                yield number
        seen.append(current_span_name())

    assert list(contacts()) == [0, 1]
    assert seen == [("page", "acme"), ("page", "acme"), "execute_workflow import.contacts"]
    spans = {s.name: s for s in telemetry.spans()}
    assert spans["page"].parent.span_id == spans["execute_workflow import.contacts"].context.span_id  # type: ignore[union-attr]


async def test_what_an_async_body_attaches_survives_its_yields() -> None:
    seen = []

    @tenant_context("outer")
    async def rows() -> AsyncIterator[str | None]:
        with tenant_context("inner"):
            for _ in range(2):
                tenant = current_tenant()
                seen.append(tenant.id if tenant else None)
                yield "row"

    assert [row async for row in rows()] == ["row", "row"]
    assert seen == ["inner", "inner"]


def test_nested_decorated_generators_keep_their_parents(telemetry: CapturedTelemetry) -> None:
    @workflow("inner")
    def inner() -> Iterator[int]:
        yield 1
        yield 2

    @workflow("outer")
    def outer() -> Iterator[int]:
        yield from inner()
        yield 3

    assert list(outer()) == [1, 2, 3]
    spans = {s.name: s for s in telemetry.spans()}
    assert spans["execute_workflow inner"].parent.span_id == spans["execute_workflow outer"].context.span_id  # type: ignore[union-attr]


def test_decorated_generators_are_still_generator_functions() -> None:
    import inspect

    @workflow("sync")
    def sync() -> Iterator[int]:
        yield 1

    @workflow("async")
    async def asynchronous() -> AsyncIterator[int]:
        yield 1

    assert inspect.isgeneratorfunction(sync) and inspect.isasyncgenfunction(asynchronous)
    assert inspect.isgeneratorfunction(tenant_context("a")(sync.__wrapped__))  # type: ignore[attr-defined]
