"""The no-code Flask and Django patches, under the real Flask instrumentation and a real Django."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor

from otel_crm._internal.integrations.extractor import TenantExtractor
from otel_crm._internal.integrations.frameworks import _patch_call
from otel_crm._internal.propagation import install_propagator
from otel_crm._internal.settings import resolve_settings
from otel_crm.testing import capture_telemetry


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


_DJANGO_SCRIPT = r'''
import asyncio, json, sys
import django
from django.conf import settings
from django.http import JsonResponse
from django.urls import path

from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.integrations.frameworks import patch_frameworks
from otel_crm._internal.tenancy import current_tenant

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


def test_patched_flask_responses_carry_the_server_spans_trace_id(crm_propagator: None) -> None:
    """Flask test client through the no-code patch and the real Flask instrumentation: the header
    names the server span (a remote parent's trace id is kept), the access line the same trace."""

    class TracedFlask(Flask):
        pass

    _patch_call(TracedFlask, TenantExtractor(resolve_settings({}), Flask.request_class))
    with capture_telemetry() as telemetry:
        app = TracedFlask("traced")

        @app.get("/ping")
        def ping() -> Any:
            return "pong", 200, {"Server-Timing": "app;dur=1"}

        FlaskInstrumentor().instrument_app(app)
        try:
            traceparent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
            response = app.test_client().get("/ping", headers={"traceparent": traceparent})
        finally:
            FlaskInstrumentor().uninstrument_app(app)
        spans = telemetry.spans()
        if not any(s.kind is trace.SpanKind.SERVER for s in spans):
            pytest.skip("another tracer provider was installed globally first in this process")
        server = next(s for s in spans if s.kind is trace.SpanKind.SERVER)
        access = next(r for r in telemetry.logs() if (r.log_record.attributes or {}).get("path") == "/ping")
    value = f"00-{'ab' * 16}-{server.context.span_id:016x}-01"
    assert response.headers["traceresponse"] == value
    assert response.headers.getlist("Server-Timing") == [f'app;dur=1, traceparent;desc="{value}"']
    assert access.log_record.trace_id == int("ab" * 16, 16)
    assert access.log_record.attributes["crm.trace.sampled"] is True  # type: ignore[index]


_DJANGO_HEADERS_SCRIPT = r'''
import asyncio, json
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

from opentelemetry import trace

def view(request):
    if trace.get_current_span().get_span_context().is_valid:
        return HttpResponse("ok")
    # The Django instrumentation traces ASGI requests only with opentelemetry-instrumentation-asgi
    # installed (not a dependency): open the server span here as it would.
    with trace.get_tracer("test").start_as_current_span("GET ping", kind=trace.SpanKind.SERVER):
        return HttpResponse("ok")

settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], MIDDLEWARE=[], DATABASES={},
                   INSTALLED_APPS=[], SECRET_KEY="x", LOGGING_CONFIG=None)
urlpatterns = [path("ping", view)]

from opentelemetry.instrumentation.django import DjangoInstrumentor
from otel_crm.testing import capture_telemetry
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.integrations.frameworks import patch_frameworks

with capture_telemetry(trace_response_header=(__import__("sys").argv[1] == "on")) as telemetry:
    trace.set_tracer_provider(telemetry.runtime.tracer_provider)
    DjangoInstrumentor().instrument()
    django.setup()
    patch_frameworks(resolve_settings({}), lambda name: name == "django")
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    wsgi_headers = []
    b"".join(WSGIHandler()({"REQUEST_METHOD": "GET", "PATH_INFO": "/ping", "SERVER_NAME": "t",
                            "SERVER_PORT": "80", "wsgi.input": __import__("io").BytesIO(),
                            "wsgi.url_scheme": "http"},
                           lambda status, headers, exc_info=None: wsgi_headers.extend(headers)))
    asgi_headers = []

    async def asgi():
        messages = [{"type": "http.request", "body": b"", "more_body": False}]
        async def receive():
            if messages:
                return messages.pop()
            await asyncio.Event().wait()
        async def send(message):
            if message["type"] == "http.response.start":
                asgi_headers.extend([k.decode(), v.decode()] for k, v in message["headers"])
        await ASGIHandler()({"type": "http", "method": "GET", "path": "/ping", "query_string": b"",
                             "headers": [(b"host", b"t")], "scheme": "http", "server": ("t", 80)},
                            receive, send)

    asyncio.run(asgi())
    servers = [f"{s.context.trace_id:032x}-{s.context.span_id:016x}" for s in telemetry.spans()
               if s.kind is trace.SpanKind.SERVER]
print(json.dumps({"wsgi": [list(h) for h in wsgi_headers], "asgi": asgi_headers, "servers": servers}))
'''


@pytest.mark.parametrize("switch", ["on", "off"])
def test_django_wsgi_and_asgi_responses_carry_the_trace_id(switch: str) -> None:
    """Django's WSGI and ASGI handlers under the real Django instrumentation, in a subprocess
    (Django's settings are process-wide). Django's test client bypasses both handlers (it calls
    the request handler directly), so the handlers are called as a server calls them."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _DJANGO_HEADERS_SCRIPT, switch], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(outcome["servers"]) == 2
    for (kind, headers), server in zip((("wsgi", outcome["wsgi"]), ("asgi", outcome["asgi"])),
                                       outcome["servers"], strict=True):
        found = {name.lower(): value for name, value in headers}
        if switch == "off":
            assert "traceresponse" not in found and "server-timing" not in found, kind
            continue
        assert found["traceresponse"] == f"00-{server}-01", kind
        assert found["server-timing"] == f'traceparent;desc="00-{server}-01"', kind


_DJANGO_STREAMING_SCRIPT = r'''
import asyncio, io, json, logging
import django
from django.conf import settings
from django.http import StreamingHttpResponse
from django.urls import path

from opentelemetry import trace

def rows():
    for index in range(2):
        logging.getLogger("crm").info("row %s", index)
        yield b"x"

def view(request):
    if trace.get_current_span().get_span_context().is_valid:
        return StreamingHttpResponse(rows())
    # ASGI: no server span without opentelemetry-instrumentation-asgi; open one as it would.
    with trace.get_tracer("test").start_as_current_span("GET export", kind=trace.SpanKind.SERVER):
        return StreamingHttpResponse(rows())

settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], MIDDLEWARE=[], DATABASES={},
                   INSTALLED_APPS=[], SECRET_KEY="x", LOGGING_CONFIG=None)
urlpatterns = [path("export", view)]

from opentelemetry.instrumentation.django import DjangoInstrumentor
from otel_crm.testing import capture_telemetry
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.integrations.frameworks import patch_frameworks

with capture_telemetry() as telemetry:
    trace.set_tracer_provider(telemetry.runtime.tracer_provider)
    DjangoInstrumentor().instrument()
    django.setup()
    patch_frameworks(resolve_settings({}), lambda name: name == "django")
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    body = WSGIHandler()({"REQUEST_METHOD": "GET", "PATH_INFO": "/export", "SERVER_NAME": "t",
                          "SERVER_PORT": "80", "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http",
                          "HTTP_X_TENANT_ID": "acme"}, lambda status, headers, exc_info=None: None)
    b"".join(body)
    body.close()

    async def asgi():
        messages = [{"type": "http.request", "body": b"", "more_body": False}]
        async def receive():
            if messages:
                return messages.pop()
            await asyncio.Event().wait()
        async def send(message):
            return None
        await ASGIHandler()({"type": "http", "method": "GET", "path": "/export", "query_string": b"",
                             "headers": [(b"host", b"t"), (b"x-tenant-id", b"acme")], "scheme": "http",
                             "server": ("t", 80)}, receive, send)

    asyncio.run(asgi())
    servers = [[s.context.trace_id, s.context.span_id] for s in telemetry.spans()
               if s.kind is trace.SpanKind.SERVER]
    rows_logged = [[r.log_record.trace_id, r.log_record.span_id, (r.log_record.attributes or {}).get("crm.tenant.id")]
                   for r in telemetry.logs() if str(r.log_record.body).startswith("row")]
print(json.dumps({"servers": servers, "rows": rows_logged}))
'''


def test_django_streamed_bodies_log_with_the_tenant_and_the_trace_id() -> None:
    """StreamingHttpResponse under Django's WSGI and ASGI handlers: the instrumentation ends the
    server span in its middleware, before the handler produces the body."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _DJANGO_STREAMING_SCRIPT], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(outcome["servers"]) == 2 and len(outcome["rows"]) == 4, outcome
    for server, rows in zip(outcome["servers"], (outcome["rows"][:2], outcome["rows"][2:]), strict=True):
        assert rows == [[*server, "acme"]] * 2
