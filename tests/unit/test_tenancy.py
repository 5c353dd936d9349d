"""Tenant context: the API, how it follows tasks and threads, isolation under load, the metric guard,
resource-vs-request semantics."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask

import otel_crm
from otel_crm._internal.integrations.asgi import TenantASGIMiddleware
from otel_crm._internal.integrations.extractor import TenantExtractor
from otel_crm._internal.integrations.wsgi import TenantWSGIMiddleware
from otel_crm._internal.memo import Memo
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.stdout import JsonFormatter
from otel_crm._internal.tenancy import (
    MAX_TENANT_ID_LENGTH,
    OTHER_TENANT,
    TenantLabeler,
    clean_tenant_id,
    current_tenant,
    tenant_context,
)
from otel_crm.testing import CapturedTelemetry, capture_telemetry

TENANTS = [f"tenant-{i:02d}" for i in range(50)]
REQUESTS = 10_000
log = logging.getLogger("crm.isolation")


def _tenant_id() -> str | None:
    tenant = current_tenant()
    return tenant.id if tenant else None


# --- the API ---------------------------------------------------------------------------------------


def test_context_manager_sets_and_restores_and_nests() -> None:
    assert current_tenant() is None
    with otel_crm.tenant_context("acme", user_id="u-1", tier="gold") as tenant:
        assert tenant is not None and tenant == otel_crm.current_tenant()
        assert (tenant.id, tenant.user_id, tenant.tier) == ("acme", "u-1", "gold")
        with tenant_context("globex"):
            assert _tenant_id() == "globex"
            assert current_tenant().user_id is None  # type: ignore[union-attr]
        assert _tenant_id() == "acme"
    assert current_tenant() is None


def test_decorator_sync_and_async() -> None:
    @tenant_context("acme")
    def sync() -> str | None:
        return _tenant_id()

    @tenant_context("globex")
    async def coro() -> str | None:
        await asyncio.sleep(0)
        return _tenant_id()

    assert sync() == "acme"
    assert asyncio.run(coro()) == "globex"
    assert current_tenant() is None


async def test_async_context_manager() -> None:
    async with tenant_context("acme") as tenant:
        assert tenant is not None and _tenant_id() == "acme"
    assert current_tenant() is None


def test_one_object_entered_by_many_threads_at_once() -> None:
    shared = tenant_context("acme")
    barrier = threading.Barrier(8)
    seen: list[str | None] = []

    def work() -> None:
        with shared:
            barrier.wait()  # all eight inside at once: exits come in any order
            seen.append(_tenant_id())
        seen.append(_tenant_id())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(seen) == {"acme": 8, None: 8}


@pytest.mark.parametrize("bad", [None, "", "   ", "\x00\x1b"])
def test_missing_tenant_id_is_a_no_op_not_an_error(bad: str | None) -> None:
    with tenant_context("outer"):
        with tenant_context(bad) as tenant:
            assert tenant is None and _tenant_id() == "outer"
        assert tenant_context(bad)(_tenant_id)() == "outer"


def test_ids_are_cleaned_and_bounded() -> None:
    assert clean_tenant_id("  acme\n\t") == "acme"
    assert clean_tenant_id("ac\x00me\x1b[31m") == "acme[31m"
    assert clean_tenant_id(42) == "42"
    assert len(clean_tenant_id("x" * 100_000) or "") == MAX_TENANT_ID_LENGTH
    with tenant_context("y" * 5000, user_id="u\r\n" + "z" * 500) as tenant:
        assert tenant is not None and len(tenant.id) == MAX_TENANT_ID_LENGTH
        assert tenant.user_id is not None and "\n" not in tenant.user_id
        assert len(tenant.user_id) <= MAX_TENANT_ID_LENGTH


# --- following the work: tasks, threads ---------------------------------------------------------


async def test_asyncio_tasks_inherit_the_tenant_of_their_creator() -> None:
    async def child() -> str | None:
        await asyncio.sleep(0)
        return _tenant_id()

    async def request(tenant: str) -> tuple[str, list[str | None]]:
        async with tenant_context(tenant):
            tasks = [asyncio.create_task(child()) for _ in range(3)]
            return tenant, list(await asyncio.gather(*tasks))

    results = await asyncio.gather(*(request(t) for t in TENANTS))
    for tenant, seen in results:
        assert seen == [tenant] * 3


async def test_to_thread_copies_context_but_run_in_executor_does_not() -> None:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(2) as pool:
        async with tenant_context("acme"):
            assert await asyncio.to_thread(_tenant_id) == "acme"
            # loop.run_in_executor, like executor.submit, runs in the worker's own context.
            assert await loop.run_in_executor(pool, _tenant_id) is None
            ctx = contextvars.copy_context()
            assert await loop.run_in_executor(pool, ctx.run, _tenant_id) == "acme"


def test_bare_thread_pool_submit_loses_the_tenant_copy_context_keeps_it() -> None:
    with ThreadPoolExecutor(4) as pool, tenant_context("acme"):
        assert pool.submit(_tenant_id).result() is None  # Python 3.11: no context copy
        assert pool.submit(contextvars.copy_context().run, _tenant_id).result() == "acme"


def test_decorated_function_in_a_pool_keeps_its_tenant() -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: tenant_context(t)(_tenant_id)(), TENANTS))
    assert results == TENANTS


# --- isolation under load: every span and log record carries its own request's tenant ------------


def _check_isolation(telemetry: CapturedTelemetry, expected_requests: int,
                     json_lines: list[dict] | None = None) -> None:  # type: ignore[type-arg]
    spans = [s for s in telemetry.spans() if s.attributes and "test.expected_tenant" in s.attributes]
    assert len(spans) >= expected_requests
    wrong = [(s.name, s.attributes.get("crm.tenant.id"), s.attributes["test.expected_tenant"])
             for s in spans if s.attributes.get("crm.tenant.id") != s.attributes["test.expected_tenant"]]
    assert not wrong, wrong[:5]
    records = [r for r in telemetry.logs()
               if r.log_record.attributes and "expected=" in str(r.log_record.body)]
    assert len(records) >= expected_requests
    wrong_logs = [(r.log_record.body, r.log_record.attributes.get("crm.tenant.id")) for r in records
                  if f"expected={r.log_record.attributes.get('crm.tenant.id')};"
                  not in str(r.log_record.body)]
    assert not wrong_logs, wrong_logs[:5]
    if json_lines is not None:
        checked = [line for line in json_lines if "expected=" in line["message"]]
        assert len(checked) >= expected_requests
        assert all(f"expected={line.get('tenant_id')};" in line["message"] for line in checked)


def _work(tracer, expected: str, path: str) -> None:  # type: ignore[no-untyped-def]
    """A request handler's body: spans and logs that say which tenant they belong to."""
    with tracer.start_as_current_span("handle", attributes={"test.expected_tenant": expected}):
        log.info("working expected=%s; path=%s", expected, path)
        with tracer.start_as_current_span("db", attributes={"test.expected_tenant": expected}):
            pass


@pytest.fixture
def json_capture():  # type: ignore[no-untyped-def]
    """JSON lines of `log`, and only OTel's handler left on the root logger for the duration:
    pytest's own capture handlers would format 20,000 records and triple the test's time."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service="t", environment="test"))
    log.addHandler(handler)
    root = logging.getLogger()
    saved = list(root.handlers)

    def lines() -> list[dict]:  # type: ignore[type-arg]
        return [json.loads(line) for line in stream.getvalue().splitlines() if line]

    def quiet_root() -> None:
        root.handlers[:] = [h for h in root.handlers if type(h).__name__ == "LoggingHandler"]

    lines.quiet_root = quiet_root  # type: ignore[attr-defined]
    yield lines
    root.handlers[:] = saved
    log.removeHandler(handler)


def test_10k_interleaved_flask_requests_in_threads_never_mix_tenants(json_capture) -> None:  # type: ignore[no-untyped-def]
    """Real WSGI requests through Flask's test client, eight threads, tenant from the header."""
    with capture_telemetry() as telemetry:
        json_capture.quiet_root()
        tracer = telemetry.runtime.tracer("test")
        app = Flask("isolation")

        @app.get("/work/<expected>")
        def work(expected: str) -> dict[str, str | None]:
            _work(tracer, expected, "/work/" + expected)
            return {"tenant": _tenant_id()}

        app.wsgi_app = TenantWSGIMiddleware(app.wsgi_app, TenantExtractor(resolve_settings({})))  # type: ignore[method-assign]
        rng = random.Random(7)
        order = [rng.choice(TENANTS) for _ in range(REQUESTS)]
        local = threading.local()

        def call(tenant: str) -> str | None:
            client = getattr(local, "client", None) or app.test_client()
            local.client = client
            response = client.get(f"/work/{tenant}", headers={"X-Tenant-ID": tenant})
            assert _tenant_id() is None  # the middleware detached: nothing leaks into the thread
            return response.get_json()["tenant"]  # type: ignore[index,no-any-return]

        with ThreadPoolExecutor(8) as pool:
            answered = list(pool.map(call, order))
        assert answered == order
        _check_isolation(telemetry, REQUESTS, json_capture())
        access = [r for r in telemetry.logs() if r.log_record.attributes
                  and r.log_record.attributes.get("path", "").startswith("/work/")]
        assert len(access) == REQUESTS
        assert all(r.log_record.attributes["path"] == "/work/" + r.log_record.attributes["crm.tenant.id"]
                   for r in access)


def test_10k_interleaved_asgi_requests_in_tasks_never_mix_tenants(json_capture) -> None:  # type: ignore[no-untyped-def]
    """ASGI requests as concurrent asyncio tasks; each yields to the loop between its spans, and
    hops to a worker thread with asyncio.to_thread (context copied)."""
    with capture_telemetry() as telemetry:
        json_capture.quiet_root()
        tracer = telemetry.runtime.tracer("test")

        async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
            expected = scope["path"].rsplit("/", 1)[1]
            with tracer.start_as_current_span("handle", attributes={"test.expected_tenant": expected}):
                await asyncio.sleep(0)
                log.info("working expected=%s; path=%s", expected, scope["path"])
                await asyncio.sleep(0)
                if hash(expected) % 10 == 0:
                    await asyncio.to_thread(_work, tracer, expected, scope["path"])
                else:
                    _work(tracer, expected, scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": (_tenant_id() or "").encode()})

        wrapped = TenantASGIMiddleware(app, TenantExtractor(resolve_settings({})))
        rng = random.Random(11)
        order = [rng.choice(TENANTS) for _ in range(REQUESTS)]

        async def call(tenant: str) -> str:
            body: list[bytes] = []

            async def send(message) -> None:  # type: ignore[no-untyped-def]
                if message["type"] == "http.response.body":
                    body.append(message["body"])

            scope = {"type": "http", "method": "GET", "path": f"/work/{tenant}",
                     "headers": [(b"x-tenant-id", tenant.encode())]}
            await wrapped(scope, None, send)
            return b"".join(body).decode()

        async def main() -> list[str]:
            semaphore = asyncio.Semaphore(500)

            async def bounded(tenant: str) -> str:
                async with semaphore:
                    return await call(tenant)

            return list(await asyncio.gather(*(bounded(t) for t in order)))

        assert asyncio.run(main()) == order
        _check_isolation(telemetry, REQUESTS, json_capture())


# --- metrics: the cardinality guard --------------------------------------------------------------


def test_1000_tenants_make_at_most_limit_plus_one_series_and_overflow_is_counted() -> None:
    limit = 20
    with capture_telemetry(tenant_metric_limit=limit) as telemetry:
        tracer = telemetry.runtime.tracer("test")
        for i in range(1000):
            with tenant_context(f"t{i:04d}"), tracer.start_as_current_span("job"):
                pass
        for name in ("crm.requests", "crm.request.duration"):
            tenants = {p.attributes.get("crm.tenant.id") for p in telemetry.metric_points(name)}
            assert len(tenants) <= limit + 1, (name, len(tenants))
            assert OTHER_TENANT in tenants
        overflow = telemetry.metric_sum("crm.metric.overflow", crm__metric__name="crm.requests")
        assert overflow == 1000 - limit
        # A tenant that got a slot keeps it; one that did not stays __other__.
        with tenant_context("t0000"), tracer.start_as_current_span("job"):
            pass
        with tenant_context("t0999"), tracer.start_as_current_span("job"):
            pass
        counts: Counter[str] = Counter()
        for point in telemetry.metric_points("crm.requests"):  # delta points, summed
            counts[point.attributes.get("crm.tenant.id")] += point.value
        assert counts["t0000"] == 2 and counts[OTHER_TENANT] == 1000 - limit + 1
        assert "t0999" not in counts


def test_allow_listed_tenants_always_keep_their_name() -> None:
    overflows: list[str] = []
    labeler = TenantLabeler(2, allowlist=["vip"], on_overflow=overflows.append)
    assert [labeler.label("m", t) for t in ("a", "b", "c", "vip", "a")] == ["a", "b", OTHER_TENANT, "vip", "a"]
    assert labeler.label("other.metric", "c") == "c"  # the limit is per metric
    assert labeler.label("m", None) is None
    assert overflows == ["m"]


def test_labeler_is_consistent_under_threads() -> None:
    labeler = TenantLabeler(10)
    with ThreadPoolExecutor(8) as pool:
        labels = list(pool.map(lambda i: labeler.label("m", f"t{i % 100}"), range(20_000)))
    assert len(set(labels) - {OTHER_TENANT}) == 10


# --- user id: personal data, opt-in ---------------------------------------------------------------


@pytest.mark.parametrize("capture", [False, True])
def test_user_id_only_when_enabled(capture: bool) -> None:
    with capture_telemetry(capture_user_id=capture) as telemetry:
        tracer = telemetry.runtime.tracer("test")
        with tenant_context("acme", user_id="user-42"), tracer.start_as_current_span("req"):
            logging.getLogger("crm").info("hello")
        span = telemetry.span("req")
        record = next(r for r in telemetry.logs() if r.log_record.body == "hello")
        assert span.attributes["crm.tenant.id"] == "acme"  # type: ignore[index]
        assert record.log_record.attributes["crm.tenant.id"] == "acme"  # type: ignore[index]
        assert (span.attributes.get("user.id") == "user-42") is capture  # type: ignore[union-attr]
        assert (record.log_record.attributes.get("user.id") == "user-42") is capture  # type: ignore[union-attr]
        assert all("user-42" not in str(v) for v in span.attributes.values()) or capture  # type: ignore[union-attr]


# --- resource vs request ------------------------------------------------------------------------


def test_single_tenant_resource_and_a_request_for_another_tenant() -> None:
    """OTEL_CRM_TENANT_ID names the deployment's tenant on the resource; a request that carries a
    different tenant gets that tenant on its own spans and logs; the resource is unchanged."""
    with capture_telemetry(tenant_id="acme-dedicated") as telemetry:
        tracer = telemetry.runtime.tracer("test")
        with tracer.start_as_current_span("no-request-tenant"):
            logging.getLogger("crm").info("plain")
        with tenant_context("globex"), tracer.start_as_current_span("request-tenant"):
            logging.getLogger("crm").info("scoped")
        plain, scoped = telemetry.span("no-request-tenant"), telemetry.span("request-tenant")
        assert plain.resource.attributes["crm.tenant.id"] == "acme-dedicated"
        assert "crm.tenant.id" not in (plain.attributes or {})
        assert scoped.resource.attributes["crm.tenant.id"] == "acme-dedicated"
        assert scoped.attributes["crm.tenant.id"] == "globex"  # type: ignore[index]
        records = {r.log_record.body: r for r in telemetry.logs()}
        assert "crm.tenant.id" not in (records["plain"].log_record.attributes or {})
        assert records["scoped"].log_record.attributes["crm.tenant.id"] == "globex"  # type: ignore[index]
        assert records["scoped"].resource.attributes["crm.tenant.id"] == "acme-dedicated"
        tenants = {p.attributes.get("crm.tenant.id") for p in telemetry.metric_points("crm.requests")}
        assert tenants == {None, "globex"}  # metrics: the request's tenant; the resource adds its own


def test_a_forked_worker_gets_its_own_tenant_budget() -> None:
    overflowed: list[str] = []
    labeler = TenantLabeler(1, on_overflow=overflowed.append)
    assert labeler.label("crm.requests", "acme") == "acme"
    assert labeler.label("crm.requests", "globex") == OTHER_TENANT
    # The worker's metric store starts empty after a fork, so its first tenants keep their names.
    labeler.after_fork()
    assert labeler.label("crm.requests", "globex") == "globex"
    assert overflowed == ["crm.requests"]


# --- hostile tenant ids: one outgoing form on every signal ---------------------------------------

_JWT_HEADER = "eyJhbGciOiJIUzI1NiJ9"  # a 103-character JWT: under the maximum length, found by the scrubber
_JWT_PAYLOAD = "eyJlbWFpbCI6ImphbmVAZXhhbXBsZS5jb20ifQ"
_JWT = f"{_JWT_HEADER}.{_JWT_PAYLOAD}.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
HOSTILE = {  # id -> what must not leave
    "jane.doe@example.com": "jane.doe@example.com",
    _JWT: _JWT_PAYLOAD,
    _JWT * 2: _JWT_PAYLOAD,  # over the maximum length: cut, and the cut JWT would no longer parse
    "acme-" + "x" * 295: "x" * 100,
    "acme\r\n2026-01-01 INFO forged\x1b[31m": "\n",
}


@pytest.mark.parametrize("hostile", list(HOSTILE), ids=["email", "jwt", "long-jwt", "300-chars", "controls"])
def test_a_hostile_tenant_id_has_one_outgoing_form_on_every_signal(
        hostile: str, capsys: pytest.CaptureFixture[str]) -> None:
    from otel_crm._internal.logs import install_log_handlers, remove_log_handlers

    secret = HOSTILE[hostile]
    with capture_telemetry() as telemetry:
        logger = logging.getLogger("test.hostile_tenant")
        logger.propagate = False
        settings = telemetry.runtime.settings.replace(log_format="json", logs_exporter=("otlp",), log_level="info")
        install_log_handlers(settings, telemetry.runtime.logger_provider, scrubber=telemetry.runtime.scrubber,
                             root=logger)
        try:
            tracer = telemetry.runtime.tracer("test")
            with tenant_context(hostile), tracer.start_as_current_span("job"):
                logger.warning("hello")
        finally:
            remove_log_handlers(root=logger)
            logger.propagate = True
        span = telemetry.span("job")
        record = next(r for r in telemetry.logs() if r.log_record.body == "hello")
        (label,) = {p.attributes["crm.tenant.id"] for p in telemetry.metric_points("crm.requests")}
        line = next(json.loads(text) for text in capsys.readouterr().out.splitlines() if '"hello"' in text)
        form = span.attributes["crm.tenant.id"]  # type: ignore[index]
        assert record.log_record.attributes["crm.tenant.id"] == form  # type: ignore[index]
        assert label == form and line["tenant_id"] == form
        assert secret not in str(form) and "\x1b" not in str(form)
        assert len(str(form)) <= MAX_TENANT_ID_LENGTH
        if hostile.startswith(_JWT_HEADER):
            cut = len(hostile) > MAX_TENANT_ID_LENGTH
            assert form == ("[REDACTED:tenant-too-long]" if cut else "[REDACTED:secret]")


# --- the span processor's last-tenant shortcut ----------------------------------------------------


def test_span_processor_gives_each_span_its_own_tenants_form_when_tenants_alternate() -> None:
    """The processor remembers the last tenant's form: spans of alternating tenants, of equal ids
    in different objects, and of tenants with a tier (no shortcut) each get their own."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_crm._internal.tenancy import TenantForm, TenantSpanProcessor

    calls: list[str] = []

    class Scrubber:
        def scrub_value(self, key: str, value: str) -> str:
            calls.append(value)
            return value.upper()

    provider = TracerProvider()
    provider.add_span_processor(TenantSpanProcessor(form=TenantForm(Scrubber())))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    plan = ["a", "a", "b", "a", None, "b", "b", "tier"]
    for index, name in enumerate(plan):
        if name is None:
            tracer.start_span(f"s{index}").end()
            continue
        with tenant_context(name if name != "tier" else "c", tier="gold" if name == "tier" else None):
            tracer.start_span(f"s{index}").end()
    spans = {span.name: dict(span.attributes or {}) for span in exporter.get_finished_spans()}
    expected = ["A", "A", "B", "A", None, "B", "B", "C"]
    assert [spans[f"s{i}"].get("crm.tenant.id") for i in range(len(plan))] == expected
    assert spans["s7"]["crm.tenant.tier"] == "gold"
    assert sorted(set(calls)) == ["a", "b", "c"] and len(calls) == 3, "the form cache still answers"


def test_context_with_tenant_on_an_empty_context_is_built_once_per_tenant_and_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import baggage
    from opentelemetry.context import Context

    from otel_crm._internal import tenancy

    monkeypatch.setattr(tenancy, "_empty_with_tenant", Memo(3))
    plain, full = tenancy.Tenant("acme"), tenancy.Tenant("acme", "u-1", "gold")
    for tenant in (plain, full):
        first = tenancy.context_with_tenant(tenant, Context())
        assert first == tenancy._with_tenant(tenant, Context())  # what the public API builds
        assert tenancy.context_with_tenant(tenancy.Tenant(tenant.id, tenant.user_id, tenant.tier), Context()) is first
        assert current_tenant(first) == tenant
    assert dict(baggage.get_all(tenancy.context_with_tenant(plain, Context()))) == {"crm.tenant.id": "acme"}
    assert dict(baggage.get_all(tenancy.context_with_tenant(full, Context()))) == {
        "crm.tenant.id": "acme", "crm.user.id": "u-1", "crm.tenant.tier": "gold"}
    # a context that holds anything is not shared: a nested tenant drops the outer one's user and tier
    nested = tenancy.context_with_tenant(plain, tenancy.context_with_tenant(full, Context()))
    assert dict(baggage.get_all(nested)) == {"crm.tenant.id": "acme"} and current_tenant(nested) == plain
    for index in range(10):
        tenancy.context_with_tenant(tenancy.Tenant(f"t{index}"), Context())
    assert len(tenancy._empty_with_tenant) <= 3
    # None: the current context (empty outside any tenant block)
    assert tenancy.context_with_tenant(plain) is tenancy.context_with_tenant(plain, Context())
