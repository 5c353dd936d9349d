"""The cheaper extraction returns what the global propagator returns (differential, every case),
takes its own path only where it may, and is installed only for the default propagators with
OTEL_CRM_FAST_SPANS on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation import utils
from opentelemetry.instrumentation.wsgi import wsgi_getter
from opentelemetry.propagators.textmap import default_getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_crm._internal import fast_extract
from otel_crm._internal.fast_extract import fast_extract as extract
from otel_crm._internal.propagation import install_propagator
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import tenant_context

TRACEPARENT = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
ENVIRONS: list[dict[str, Any]] = [
    {},
    {"REQUEST_METHOD": "GET", "PATH_INFO": "/ok", "HTTP_HOST": "localhost", "HTTP_X_TENANT_ID": "acme"},
    {"HTTP_TRACEPARENT": TRACEPARENT},
    {"HTTP_TRACEPARENT": TRACEPARENT, "HTTP_TRACESTATE": "k=v"},
    {"HTTP_TRACEPARENT": "00-garbage"},
    {"HTTP_TRACEPARENT": ""},
    {"HTTP_BAGGAGE": "a=1,crm.tenant.id=evil"},
    {"HTTP_BAGGAGE": "crm.tenant.id=gw,crm.user.id=u9", "HTTP_TRACEPARENT": TRACEPARENT},
    {"HTTP_BAGGAGE": ""},
]
SETTINGS = [{}, {"OTEL_CRM_TRUST_INCOMING_BAGGAGE": "true"}, {"OTEL_PROPAGATORS": "tracecontext"},
            {"OTEL_PROPAGATORS": "baggage"}, {"OTEL_PROPAGATORS": "baggage,tracecontext"},
            {"OTEL_PROPAGATORS": "none"}, {"OTEL_CRM_FAST_SPANS": "false"}]


@pytest.fixture
def restore() -> Iterator[None]:
    previous = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(previous)
    install_propagator(resolve_settings({}))  # the default again (the composite then set aside)
    propagate.set_global_textmap(previous)


def comparable(ctx: Context) -> dict[str, Any]:
    """A Context's values, spans by their span context (NonRecordingSpan has no equality)."""
    return {key: value.get_span_context() if isinstance(value, trace.Span) else value
            for key, value in ctx.items()}


@pytest.mark.parametrize("env", SETTINGS)
@pytest.mark.parametrize("tenant", [None, "acme"])
def test_the_same_context_as_the_global_propagator(restore: None, env: dict[str, str], tenant: str | None) -> None:
    install_propagator(resolve_settings(env))
    for environ in ENVIRONS:
        with tenant_context(tenant, user_id="u1", tier="gold") if tenant else contextlib.nullcontext():
            expected = propagate.extract(environ, getter=wsgi_getter)
            assert comparable(extract(environ, getter=wsgi_getter)) == comparable(expected), environ
            assert comparable(utils.extract(environ, getter=wsgi_getter)) == comparable(expected), environ


def test_its_own_path_for_requests_without_baggage(restore: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cases it stands in for never reach upstream's extract (else the differential above
    would hold trivially)."""
    install_propagator(resolve_settings({}))
    monkeypatch.setattr(fast_extract, "_upstream_extract", _refuse)
    for environ in ENVIRONS:
        if "HTTP_BAGGAGE" not in environ:
            with tenant_context("acme"):
                extract(environ, getter=wsgi_getter)
    with pytest.raises(AssertionError):
        extract({"HTTP_BAGGAGE": "a=1"}, getter=wsgi_getter)


def _refuse(*args: Any, **kwargs: Any) -> Context:
    raise AssertionError("upstream's extract")


@pytest.mark.parametrize("call", [
    lambda: extract({}, getter=default_getter),  # another getter
    lambda: extract({}, Context(), getter=wsgi_getter),  # an explicit context
    lambda: extract({"HTTP_BAGGAGE": "a=1"}, getter=wsgi_getter),
])
def test_upstream_for_anything_else(restore: None, monkeypatch: pytest.MonkeyPatch, call: Any) -> None:
    install_propagator(resolve_settings({}))
    monkeypatch.setattr(fast_extract, "_upstream_extract", _refuse)
    with pytest.raises(AssertionError):
        call()


def test_a_propagator_set_later_is_used(restore: None) -> None:
    install_propagator(resolve_settings({}))
    propagate.set_global_textmap(TraceContextTextMapPropagator())  # the app's own, after configure()
    with tenant_context("acme"):
        ctx = extract({}, getter=wsgi_getter)
    assert dict(ctx) == {}  # no tenant: trace context alone does not carry it


@pytest.mark.parametrize(("env", "installed"), [
    ({}, True), ({"OTEL_PROPAGATORS": "tracecontext"}, True), ({"OTEL_CRM_FAST_SPANS": "false"}, False),
    ({"OTEL_PROPAGATORS": "baggage"}, False), ({"OTEL_PROPAGATORS": "tracecontext,baggage,none"}, False),
])
def test_installed_for_the_default_propagators_only(restore: None, env: dict[str, str], installed: bool) -> None:
    install_propagator(resolve_settings({}))
    assert utils.extract is extract
    install_propagator(resolve_settings(env))
    assert (utils.extract is extract) is installed
    assert installed or utils.extract is propagate.extract


def test_someone_elses_extract_is_left_alone(restore: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(utils, "extract", _refuse)
    install_propagator(resolve_settings({}))
    assert utils.extract is _refuse


_DJANGO_SCRIPT = r'''
import io, json
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], MIDDLEWARE=[], DATABASES={},
                   INSTALLED_APPS=[], SECRET_KEY="x", LOGGING_CONFIG=None)
urlpatterns = [path("ok", lambda request: HttpResponse("ok"))]
django.setup()

from opentelemetry.instrumentation import utils
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_crm._internal import fast_extract
from otel_crm._internal.propagation import install_propagator
from otel_crm._internal.settings import resolve_settings

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
DjangoInstrumentor().instrument(tracer_provider=provider)
install_propagator(resolve_settings({}))
upstream = []
real = fast_extract._upstream_extract
fast_extract._upstream_extract = lambda *args, **kwargs: upstream.append(1) or real(*args, **kwargs)

from django.core.handlers.wsgi import WSGIHandler

def get(**headers):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/ok", "SERVER_NAME": "t", "SERVER_PORT": "80",
               "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http", **headers}
    b"".join(WSGIHandler()(environ, lambda status, headers, exc_info=None: None))
    (span,) = exporter.get_finished_spans()
    exporter.clear()
    parent = span.parent
    return [span.kind.name, parent and [f"{parent.trace_id:032x}", f"{parent.span_id:016x}"], len(upstream)]

print(json.dumps({"patched": utils.extract is fast_extract.fast_extract, "plain": get(),
                  "traced": get(HTTP_TRACEPARENT="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"),
                  "baggage": get(HTTP_BAGGAGE="k=v", HTTP_TRACEPARENT="00-" + "ef" * 16 + "-" + "12" * 8 + "-01")}))
'''


def test_the_django_middleware_extracts_through_it() -> None:
    """Django's middleware calls the same `utils.extract` with request.META (a dict) and the WSGI
    getter: its server span continues an incoming trace, and only a baggage header reaches upstream's
    extract. In a subprocess: configuring Django is process-wide."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _DJANGO_SCRIPT], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"patched": True, "plain": ["SERVER", None, 0],
                       "traced": ["SERVER", ["ab" * 16, "cd" * 8], 0],
                       "baggage": ["SERVER", ["ef" * 16, "12" * 8], 1]}
