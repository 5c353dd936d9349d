"""Baggage: the tenant goes out to allowed hosts only, and callers cannot name a tenant unless
incoming baggage is trusted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider

from otel_crm._internal.propagation import (
    CrmBaggagePropagator,
    host_allowed,
    install_propagator,
    outgoing_request,
    propagators_for,
    requests_request_hook,
)
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import current_tenant, tenant_context
from otel_crm.testing import capture_telemetry

tracer = TracerProvider().get_tracer("test")


@pytest.fixture
def crm_propagator() -> Iterator[None]:
    previous = propagate.get_global_textmap()
    install_propagator(resolve_settings({}))
    yield
    propagate.set_global_textmap(previous)


def _inject(**kwargs: Any) -> dict[str, str]:
    carrier: dict[str, str] = {}
    CrmBaggagePropagator().inject(carrier, **kwargs)
    return carrier


@pytest.mark.parametrize(("host", "allowed", "expected"), [
    ("localhost", None, True), ("127.0.0.1", None, True), ("127.0.0.2", None, False),
    ("LOCALHOST.", None, True), ("api.openai.com", None, False), (None, None, False), ("", None, False),
    ("crm-b.internal", [".internal"], True), ("internal", [".internal"], True),
    ("evilinternal", [".internal"], False), ("internal.evil.com", [".internal"], False),
    ("b.svc", ["a.svc", " B.svc "], True),
])
def test_host_allowed(host: str | None, allowed: list[str] | None, expected: bool) -> None:
    assert host_allowed(host, allowed) is expected


def test_tenant_goes_into_outgoing_baggage() -> None:
    with tenant_context("acme", user_id="u-1", tier="gold"):
        carrier = _inject()
    assert "crm.tenant.id=acme" in carrier["baggage"]
    assert "crm.user.id=u-1" in carrier["baggage"] and "crm.tenant.tier=gold" in carrier["baggage"]
    assert _inject() == {}


def test_a_hook_verdict_blocks_one_call_only() -> None:
    with tenant_context("acme"):
        outgoing_request("https://api.hubspot.com/crm/v3/objects")
        assert _inject() == {}
        assert "baggage" in _inject()  # the verdict was consumed
        outgoing_request("http://localhost:8000/leads")
        assert "baggage" in _inject()
        outgoing_request("not a url at all ::::")
        assert _inject() == {}


@pytest.mark.parametrize(("attributes", "sent"), [
    ({"server.address": "api.stripe.com", "url.full": "https://api.stripe.com/v1"}, False),
    ({"server.address": "localhost"}, True),
    ({"url.full": "http://127.0.0.2:9/x"}, False),
    ({"http.url": "http://127.0.0.1:9/x"}, True),
    ({}, True),  # not an HTTP call we can place (gRPC, queues): keep baggage
])
def test_without_a_hook_the_client_span_decides(attributes: dict[str, str], sent: bool) -> None:
    with tenant_context("acme"), tracer.start_as_current_span(
            "GET", kind=trace.SpanKind.CLIENT, attributes=attributes):
        assert ("baggage" in _inject()) is sent


def test_incoming_tenant_baggage_is_dropped_unless_trusted() -> None:
    carrier = {"baggage": "crm.tenant.id=victim,crm.user.id=u-9,crm.tenant.tier=gold,feature=beta"}
    untrusted = CrmBaggagePropagator().extract(carrier)
    assert baggage.get_all(untrusted) == {"feature": "beta"}
    assert current_tenant(untrusted) is None
    trusted = CrmBaggagePropagator(trust_incoming=True).extract(carrier)
    assert baggage.get_baggage("crm.tenant.id", trusted) == "victim"
    tenant = current_tenant(trusted)
    assert tenant is not None and (tenant.id, tenant.user_id, tenant.tier) == ("victim", "u-9", "gold")


def test_a_forged_tenant_does_not_travel_on_to_the_next_service() -> None:
    """Public service A (trust off) called with forged baggage, then calls internal B: B must not see
    the forged tenant, only A's own (from its header) or none."""
    forged = {"baggage": "crm.tenant.id=victim"}
    token = context.attach(CrmBaggagePropagator().extract(forged))
    try:
        assert "baggage" not in _inject()
        with tenant_context("attacker"):
            assert "crm.tenant.id=attacker" in _inject()["baggage"]
    finally:
        context.detach(token)


def test_extract_keeps_the_tenant_the_middleware_opened() -> None:
    """Instrumentations extract into an empty context and attach it for the request."""
    with tenant_context("acme"):
        extracted = propagate.extract({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
        caller_says = CrmBaggagePropagator().extract({"baggage": "crm.tenant.id=victim"})
    # The default composite (tracecontext first) starts from Context(): it loses the tenant...
    assert current_tenant(extracted) is None
    # ...ours keeps it, and the header tenant beats whatever the caller put in baggage.
    assert current_tenant(caller_says).id == "acme"  # type: ignore[union-attr]
    assert baggage.get_baggage("crm.tenant.id", caller_says) == "acme"


def test_installed_propagator_keeps_the_tenant_through_traceparent_extraction(crm_propagator: None) -> None:
    with tenant_context("acme"):
        extracted = propagate.extract({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    assert current_tenant(extracted).id == "acme"  # type: ignore[union-attr]
    assert trace.get_current_span(extracted).get_span_context().trace_id == int("1" * 32, 16)


def _composite(propagators: str) -> CompositePropagator:
    return CompositePropagator(propagators_for(resolve_settings({"OTEL_PROPAGATORS": propagators})))


def test_otel_propagators_in_order_with_our_baggage_in_place_of_w3c() -> None:
    chosen = propagators_for(resolve_settings({"OTEL_PROPAGATORS": "baggage,tracecontext"}))
    assert [type(p).__name__ for p in chosen] == ["CrmBaggagePropagator", "TraceContextTextMapPropagator"]
    with tenant_context("acme"):
        carrier: dict[str, str] = {}
        _composite("tracecontext").inject(carrier)
    assert carrier == {}, "no span, and no `baggage` asked for: nothing goes out"


def test_none_propagates_nothing_but_keeps_the_tenant() -> None:
    composite = _composite("none")
    with tenant_context("acme"), tracer.start_as_current_span("client"):
        carrier: dict[str, str] = {}
        composite.inject(carrier)
        extracted = composite.extract({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
                                       "baggage": "crm.tenant.id=victim"})
    assert carrier == {} and composite.fields == set()
    assert current_tenant(extracted).id == "acme"  # type: ignore[union-attr]
    assert not trace.get_current_span(extracted).get_span_context().is_valid


def test_b3_alone_carries_the_trace_and_the_tenant_stays_on_top() -> None:
    pytest.importorskip("opentelemetry.propagators.b3")
    composite = _composite("b3")
    with tenant_context("acme"), tracer.start_as_current_span("client") as span:
        carrier: dict[str, str] = {}
        composite.inject(carrier)
        extracted = composite.extract({"b3": f"{'1' * 32}-{'2' * 16}-1"})
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert set(carrier) == {"b3"} and carrier["b3"].startswith(trace_id)
    assert trace.get_current_span(extracted).get_span_context().trace_id == int("1" * 32, 16)
    assert current_tenant(extracted).id == "acme"  # type: ignore[union-attr]


def test_a_propagator_that_fails_to_load_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    settings = resolve_settings({}).replace(propagators=("tracecontext", "jaeger"))  # not installed
    chosen = propagators_for(settings)
    assert [type(p).__name__ for p in chosen] == ["TraceContextTextMapPropagator", "CrmBaggagePropagator"]
    assert any("'jaeger'" in r.getMessage() for r in caplog.records)


# --- real requests calls through the requests instrumentation and our hook ---------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        _Recorder.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def servers() -> Iterator[dict[str, str]]:
    started = []
    urls = {}
    for name, host in (("allowed", "127.0.0.1"), ("third_party", "127.0.0.2")):
        server = ThreadingHTTPServer((host, 0), _Recorder)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        urls[name] = f"http://{host}:{server.server_address[1]}/"
    _Recorder.seen = []
    yield urls
    for server in started:
        server.shutdown()
        server.server_close()


def test_requests_to_a_third_party_carry_no_baggage(crm_propagator: None, servers: dict[str, str]) -> None:
    RequestsInstrumentor().instrument(request_hook=requests_request_hook)
    try:
        with capture_telemetry(), tenant_context("acme", user_id="u-1"):
            requests.get(servers["allowed"], timeout=5)
            requests.get(servers["third_party"], timeout=5)
            requests.get(servers["allowed"], timeout=5)
    finally:
        RequestsInstrumentor().uninstrument()
    allowed, third, allowed_again = _Recorder.seen
    assert "crm.tenant.id=acme" in allowed["baggage"] and "traceparent" in allowed
    assert "baggage" not in third
    assert "traceparent" in third  # trace context is not personal data; it still flows
    assert "crm.tenant.id=acme" in allowed_again["baggage"]
