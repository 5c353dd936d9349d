"""No-code tenant extraction: header, user header, resolver, trusted baggage; WSGI/ASGI middleware,
the Flask patch, Django query spans."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor

from otel_crm._internal import web
from otel_crm._internal.propagation import install_propagator
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import MAX_TENANT_ID_LENGTH, Tenant, current_tenant
from otel_crm._internal.web import (
    DjangoQueryTracer,
    TenantASGIMiddleware,
    TenantExtractor,
    TenantWSGIMiddleware,
    _patch_call,
    _sql_summary,
)
from otel_crm.testing import capture_telemetry

RESOLVER_CALLS: list[Any] = []


def tenant_from_subdomain(request: Any) -> str | None:
    """A resolver as users write them: `acme.crm.example.com` → `acme`."""
    RESOLVER_CALLS.append(request)
    host = request.host.split(":")[0]
    return host.split(".")[0] if host.count(".") >= 2 else None


def broken_resolver(request: Any) -> str:
    raise KeyError("session store down")


def _extract(environ: dict[str, str], **settings: Any) -> Tenant | None:
    return TenantExtractor(resolve_settings({}, **settings), Flask.request_class).from_environ(
        {"wsgi.input": None, "SERVER_NAME": "x", "SERVER_PORT": "80", **environ})


def test_tenant_and_user_from_headers() -> None:
    assert _extract({"HTTP_X_TENANT_ID": "acme", "HTTP_X_USER_ID": "u-1"}) == Tenant("acme", "u-1")
    assert _extract({"HTTP_X_USER_ID": "u-1"}) is None
    assert _extract({"HTTP_X_ORG": "globex"}, tenant_header="X-Org") == Tenant("globex")
    assert _extract({"HTTP_X_TENANT_ID": "acme"}, tenant_header="") is None


def test_header_values_are_cleaned_and_bounded() -> None:
    tenant = _extract({"HTTP_X_TENANT_ID": " ac\x00me\x1b" + "x" * 10_000, "HTTP_X_USER_ID": "\r\n"})
    assert tenant is not None and tenant.id.startswith("acme") and len(tenant.id) == MAX_TENANT_ID_LENGTH
    assert tenant.user_id is None
    assert _extract({"HTTP_X_TENANT_ID": "\x07\x08"}) is None


def test_resolver_gets_the_framework_request() -> None:
    RESOLVER_CALLS.clear()
    path = "tests.unit.test_web:tenant_from_subdomain"
    assert _extract({"HTTP_HOST": "acme.crm.example.com"}, tenant_resolver=path) == Tenant("acme")
    assert _extract({"HTTP_HOST": "localhost"}, tenant_resolver=path) is None
    assert isinstance(RESOLVER_CALLS[0], Flask.request_class)
    # The header wins; the resolver is not even called.
    RESOLVER_CALLS.clear()
    assert _extract({"HTTP_HOST": "acme.crm.example.com", "HTTP_X_TENANT_ID": "globex"},
                    tenant_resolver=path) == Tenant("globex")
    assert RESOLVER_CALLS == []


@pytest.mark.parametrize("path", ["tests.unit.test_web:broken_resolver", "no.such.module:f",
                                  "tests.unit.test_web:no_such_function", "not-a-path"])
def test_a_failing_resolver_never_breaks_the_request(path: str, caplog: pytest.LogCaptureFixture) -> None:
    app = Flask("resolver")
    app.get("/")(lambda: {"tenant": getattr(current_tenant(), "id", None)})
    app.wsgi_app = TenantWSGIMiddleware(app.wsgi_app, TenantExtractor(  # type: ignore[method-assign]
        resolve_settings({}, tenant_resolver=path), Flask.request_class))
    client = app.test_client()
    for _ in range(3):
        response = client.get("/", headers={"Host": "acme.crm.example.com"})
        assert response.status_code == 200 and response.get_json() == {"tenant": None}
    assert client.get("/", headers={"X-Tenant-ID": "acme"}).get_json() == {"tenant": "acme"}
    warnings = [r for r in caplog.records if "tenant_resolver" in r.getMessage()]
    assert len(warnings) <= 1  # logged once, then only counted


def test_incoming_baggage_is_ignored_by_default_and_used_when_trusted() -> None:
    forged = {"HTTP_BAGGAGE": "crm.tenant.id=victim,crm.user.id=u-9,crm.tenant.tier=gold"}
    assert _extract(forged) is None
    assert _extract(forged, trust_incoming_baggage=True) == Tenant("victim", "u-9", "gold")
    # A header beats baggage even when baggage is trusted; the user header beats baggage's user.
    assert _extract({**forged, "HTTP_X_TENANT_ID": "acme"}, trust_incoming_baggage=True) == Tenant("acme")
    assert _extract({**forged, "HTTP_X_USER_ID": "u-1"}, trust_incoming_baggage=True) == Tenant(
        "victim", "u-1", "gold")
    assert _extract({"HTTP_BAGGAGE": "crm.tenant.id=%07%08"}, trust_incoming_baggage=True) is None
    long = _extract({"HTTP_BAGGAGE": "crm.tenant.id=" + "a" * 1000}, trust_incoming_baggage=True)
    assert long is not None and len(long.id) == MAX_TENANT_ID_LENGTH


# --- WSGI / ASGI middleware -------------------------------------------------------------------


def test_wsgi_middleware_detaches_even_when_the_app_raises() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        assert current_tenant() == Tenant("acme")
        raise RuntimeError("boom")

    middleware = TenantWSGIMiddleware(app, TenantExtractor(resolve_settings({})))
    with capture_telemetry() as telemetry, pytest.raises(RuntimeError):
        middleware({"HTTP_X_TENANT_ID": "acme", "REQUEST_METHOD": "POST", "PATH_INFO": "/x"},
                   lambda *a: None)
    assert current_tenant() is None
    access = [r for r in telemetry.logs() if r.log_record.attributes.get("path") == "/x"]  # type: ignore[union-attr]
    assert access[0].log_record.attributes["status_code"] == 500  # type: ignore[index]
    assert access[0].log_record.attributes["crm.tenant.id"] == "acme"  # type: ignore[index]


def test_asgi_middleware_tenant_and_access_log() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            assert current_tenant() is None
            return
        logging.getLogger("crm").info("inside")
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": current_tenant().id.encode()})  # type: ignore[union-attr]

    middleware = TenantASGIMiddleware(app, TenantExtractor(resolve_settings({})))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await middleware({"type": "lifespan"}, None, send)
        await middleware({"type": "http", "method": "POST", "path": "/leads",
                          "headers": [(b"x-tenant-id", b"acme"), (b"x-user-id", b"u-1")]}, None, send)

    with capture_telemetry() as telemetry:
        asyncio.run(run())
    assert sent[-1]["body"] == b"acme"
    records = {r.log_record.body: r.log_record.attributes for r in telemetry.logs()}
    assert records["inside"]["crm.tenant.id"] == "acme"  # type: ignore[index]
    access = records["POST /leads 201"]
    assert access["crm.tenant.id"] == "acme" and access["status_code"] == 201  # type: ignore[index]
    assert "user.id" not in access  # type: ignore[operator]
    assert current_tenant() is None


# --- the Flask patch under the real Flask instrumentation --------------------------------------


@pytest.fixture
def crm_propagator() -> Iterator[None]:
    previous = propagate.get_global_textmap()
    install_propagator(resolve_settings({}))
    yield
    propagate.set_global_textmap(previous)


def _path(span: Any) -> str | None:
    attributes = span.attributes or {}
    return attributes.get("url.path") or attributes.get("http.target")  # stable / old conventions


def test_patched_flask_server_span_child_spans_and_logs_carry_the_tenant(crm_propagator: None) -> None:
    """The tenant context opens outside the server span; the Flask instrumentation's extraction
    (which starts from an empty context, and attaches it) must not lose it."""

    class PatchedFlask(Flask):
        pass

    _patch_call(PatchedFlask, TenantExtractor(resolve_settings({}), Flask.request_class))
    with capture_telemetry() as telemetry:
        app = PatchedFlask("patched")
        tracer = telemetry.runtime.tracer("test")

        @app.get("/leads/<int:lead_id>")
        def lead(lead_id: int) -> dict[str, Any]:
            with tracer.start_as_current_span("load lead"):
                logging.getLogger("crm").info("loading lead %s", lead_id)
            return {"id": lead_id}

        FlaskInstrumentor().instrument_app(app)
        try:
            client = app.test_client()
            traceparent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
            response = client.get("/leads/7", headers={"X-Tenant-ID": "acme", "traceparent": traceparent,
                                                        "baggage": "crm.tenant.id=victim"})
            assert response.status_code == 200
            client.get("/leads/8")
        finally:
            FlaskInstrumentor().uninstrument_app(app)
        spans = telemetry.spans()
        if not any(s.kind is trace.SpanKind.SERVER for s in spans):
            pytest.skip("another tracer provider was installed globally first in this process")
        server = next(s for s in spans if s.kind is trace.SpanKind.SERVER and _path(s) == "/leads/7")
        assert server.context.trace_id == int("ab" * 16, 16)  # the remote parent was honoured
        assert server.attributes["crm.tenant.id"] == "acme"  # type: ignore[index]
        child = next(s for s in spans if s.name == "load lead" and s.context.trace_id == server.context.trace_id)
        assert child.attributes["crm.tenant.id"] == "acme"  # type: ignore[index]
        records = [r for r in telemetry.logs() if r.log_record.body == "loading lead 7"]
        assert records[0].log_record.attributes["crm.tenant.id"] == "acme"  # type: ignore[index]
        anonymous = next(s for s in spans if s.kind is trace.SpanKind.SERVER and _path(s) == "/leads/8")
        assert "crm.tenant.id" not in anonymous.attributes  # type: ignore[operator]
        access = [r for r in telemetry.logs() if r.log_record.attributes.get("path") == "/leads/7"]  # type: ignore[union-attr]
        assert access[0].log_record.attributes["crm.tenant.id"] == "acme"  # type: ignore[index]
        assert access[0].log_record.span_id == server.context.span_id


def test_patching_twice_wraps_once() -> None:
    class App(Flask):
        pass

    extractor = TenantExtractor(resolve_settings({}))
    _patch_call(App, extractor)
    first = App.__call__
    _patch_call(App, extractor)
    assert App.__call__ is first


# --- Django query spans ---------------------------------------------------------------------------


@pytest.mark.parametrize(("sql", "expected"), [
    ('SELECT "crm_lead"."id" FROM "crm_lead" WHERE "crm_lead"."id" = %s', ("SELECT", "crm_lead")),
    ('INSERT INTO "crm_contact" ("email") VALUES (%s)', ("INSERT", "crm_contact")),
    ('UPDATE "crm_lead" SET "status" = %s', ("UPDATE", "crm_lead")),
    ("/* comment */ delete from crm_lead", ("DELETE", "crm_lead")),
    ("BEGIN", ("BEGIN", "")),
    ("", ("", "")),
])
def test_sql_summary(sql: str, expected: tuple[str, str]) -> None:
    assert _sql_summary(sql) == expected


def test_django_query_tracer_makes_client_spans_with_the_tenant() -> None:
    with capture_telemetry() as telemetry:
        tracer_for = DjangoQueryTracer("sqlite")
        pg = DjangoQueryTracer("postgresql", "db.internal", "5432")
        from otel_crm import tenant_context

        def execute(sql: str, params: Any, many: bool, ctx: Any) -> str:
            if "boom" in sql:
                raise ValueError("no such table")
            return "rows"

        assert tracer_for(execute, "SELECT 1 FROM django_migrations", None, False, {}) == "rows"
        assert telemetry.spans() == []  # outside any trace: no one-span traces for startup queries
        parent = telemetry.runtime.tracer("test").start_as_current_span("request")
        with tenant_context("acme"), parent:
            assert tracer_for(execute, 'SELECT * FROM "crm_lead" WHERE id = %s', (1,), False, {}) == "rows"
            pg(execute, "INSERT INTO crm_contact VALUES (%s)", [(1,), (2,)], True, {})
            with pytest.raises(ValueError):
                tracer_for(execute, "SELECT boom FROM t", None, False, {})
        select, insert, failed, _request = telemetry.spans()
    assert select.name == "SELECT crm_lead" and select.kind is trace.SpanKind.CLIENT
    assert select.attributes["db.system.name"] == "sqlite"  # type: ignore[index]
    assert select.attributes["crm.tenant.id"] == "acme"  # type: ignore[index]
    assert "server.address" not in select.attributes  # type: ignore[operator]
    assert insert.attributes["db.operation.batch.size"] == 2  # type: ignore[index]
    assert insert.attributes["server.address"] == "db.internal" and insert.attributes["server.port"] == 5432  # type: ignore[index]
    assert failed.attributes["error.type"] == "ValueError"  # type: ignore[index]
    assert failed.status.status_code is trace.StatusCode.ERROR


def test_django_connections_get_one_tracer_unless_the_driver_is_instrumented() -> None:
    class Connection:
        vendor = "sqlite"
        settings_dict: dict[str, Any] = {}

        def __init__(self, raw: Any) -> None:
            self.execute_wrappers: list[Any] = []
            self.connection = raw

    plain = Connection(object())
    web._on_connection_created(None, plain)
    web._on_connection_created(None, plain)
    assert len(plain.execute_wrappers) == 1

    class Proxy:
        __wrapped__ = object()

    instrumented = Connection(Proxy())
    web._on_connection_created(None, instrumented)
    assert instrumented.execute_wrappers == []


def test_access_line_keeps_the_trace_of_a_server_span_ended_before_start_response() -> None:
    """Django's instrumentation ends and detaches its span before the handler calls start_response."""
    with capture_telemetry() as telemetry:
        tracer = telemetry.runtime.tracer("test")

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            with tracer.start_as_current_span("GET leads", kind=trace.SpanKind.SERVER):
                with tracer.start_as_current_span("inner", kind=trace.SpanKind.SERVER):
                    pass
            start_response("204 No Content", [])
            return [b""]

        TenantWSGIMiddleware(app, TenantExtractor(resolve_settings({})))(
            {"HTTP_X_TENANT_ID": "acme", "REQUEST_METHOD": "GET", "PATH_INFO": "/leads"}, lambda *a: None)
        server = telemetry.span("GET leads")
        access = next(r for r in telemetry.logs() if r.log_record.body == "GET /leads 204")
    assert access.log_record.span_id == server.context.span_id
    assert access.log_record.trace_id == server.context.trace_id
    assert web.request_server_span.get() is None


def test_middleware_defaults_to_the_running_settings() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [current_tenant().id.encode()]  # type: ignore[union-attr]

    with capture_telemetry(tenant_header="X-Org"):
        body = TenantWSGIMiddleware(app)({"HTTP_X_ORG": "acme"}, lambda *a: None)
    assert list(body) == [b"acme"]


_DJANGO_SCRIPT = r'''
import asyncio, json, sys
import django
from django.conf import settings
from django.http import JsonResponse
from django.urls import path

from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import current_tenant
from otel_crm._internal.web import patch_frameworks

def view(request):
    tenant = current_tenant()
    return JsonResponse({"tenant": tenant.id if tenant else None})

settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], MIDDLEWARE=[], DATABASES={},
                   INSTALLED_APPS=[], SECRET_KEY="x", LOGGING_CONFIG=None)
urlpatterns = [path("who", view)]
django.setup()
print(json.dumps(patch_frameworks(resolve_settings({}), lambda name: name == "django")))

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler

out = []
wsgi_body = WSGIHandler()({"REQUEST_METHOD": "GET", "PATH_INFO": "/who", "SERVER_NAME": "t", "SERVER_PORT": "80",
               "wsgi.input": __import__("io").BytesIO(), "wsgi.url_scheme": "http", "HTTP_X_TENANT_ID": "acme"},
              lambda status, headers, exc_info=None: out.append(status))
body = []

async def asgi():
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    async def receive():
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays connected
    async def send(message):
        if message["type"] == "http.response.body":
            body.append(message.get("body", b""))
    await ASGIHandler()({"type": "http", "method": "GET", "path": "/who", "query_string": b"",
                         "headers": [(b"x-tenant-id", b"globex"), (b"host", b"t")], "scheme": "http",
                         "server": ("t", 80)}, receive, send)

asyncio.run(asgi())
print(json.dumps({"wsgi_status": out[0], "wsgi": json.loads(b"".join(wsgi_body)),
                  "asgi": json.loads(b"".join(body) or b"{}")}))
'''


def test_django_wsgi_and_asgi_handlers_open_the_tenant_context() -> None:
    """In a subprocess: configuring Django is process-wide."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _DJANGO_SCRIPT], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    patched_line, outcome_line = result.stdout.strip().splitlines()[-2:]
    assert json.loads(patched_line) == ["django", "django.db"]
    outcome = json.loads(outcome_line)
    assert outcome["wsgi_status"].startswith("200") and outcome["wsgi"] == {"tenant": "acme"}
    assert outcome["asgi"] == {"tenant": "globex"}


def test_a_generator_app_keeps_its_tenant_and_logs_its_real_status(caplog) -> None:  # type: ignore[no-untyped-def]
    import logging as _logging

    from otel_crm._internal.tenancy import current_tenant as _current
    from otel_crm._internal.web import TenantWSGIMiddleware as _Middleware

    seen_in_body = []

    def lazy_app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("201 Created", [])
        seen_in_body.append(_current())
        yield b"chunk"

    wrapped = _Middleware(lazy_app)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/leads", "HTTP_X_TENANT_ID": "acme"}
    with caplog.at_level(_logging.INFO, logger="otel_crm.access"):
        body = wrapped(environ, lambda status, headers, exc_info=None: None)
        assert _current() is None  # nothing leaks to the server thread between chunks
        assert list(body) == [b"chunk"]
        body.close()  # type: ignore[attr-defined]
    assert seen_in_body[0] is not None and seen_in_body[0].id == "acme"
    assert _current() is None
    access = [r for r in caplog.records if r.name == "otel_crm.access"]
    assert len(access) == 1 and access[0].status_code == 201
