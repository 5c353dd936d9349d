"""Spans to OTLP bytes (otel_crm/_internal/otlp_spans.py): byte for byte what upstream's
``encode_spans(...).SerializeToString()`` gives, for every attribute type, events, links, status,
trace state, limits, several resources and scopes; and upstream's encoder for what it alone handles."""

from __future__ import annotations

import math
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from otel_crm._internal import otlp_spans
from otel_crm._internal.fast_tracer import FastTracerProvider
from otel_crm._internal.otlp_spans import encode_spans_bytes

_VALUES: list[Any] = [
    "", "GET", "ünïcödé ✓", "x" * 300, True, False, 0, 1, -1, 127, 128, 300, 2**31, -(2**63), 2**63 - 1,
    0.0, -0.0, 1.5, -2.25, math.inf, -math.inf, math.nan, 1e300,
    (), ("a", "b"), (True, False), (1, -2, 2**40), (0.5, -0.0), ("a", None), [1, 2], b"", b"\x00\xff",
]


@pytest.fixture(autouse=True)
def _fresh_memo() -> Any:
    """Each test from an empty memo, and none leaves bytes a deliberately broken encoder made."""
    otlp_spans._pairs.clear()
    yield
    otlp_spans._pairs.clear()


def _spans(provider_class: type[TracerProvider], resource: Resource, *, limits: SpanLimits | None = None) -> list[Any]:
    exporter = InMemorySpanExporter()
    provider = provider_class(resource=resource, span_limits=limits or SpanLimits())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    plain = provider.get_tracer("plain")
    versioned = provider.get_tracer("opentelemetry.instrumentation.flask", "0.66b1", schema_url="https://opentelemetry.io/schemas/1.11.0",
                                    attributes={"scope.attr": "v", "n": 3})
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "a=1"), ("other", "b")]))
    linked = SpanContext(1, 2, is_remote=False)
    with versioned.start_as_current_span("GET /leads/<int:lead_id>", kind=SpanKind.SERVER,
                                         context=_context(remote), attributes={"http.request.method": "GET"}):
        for i, value in enumerate(_VALUES):
            # the same pairs as span, event and link attributes: each under its own field tag
            span = plain.start_span(f"child {i}", kind=list(SpanKind)[i % 5], attributes={"k": value, "n": 7},
                                    links=[Link(linked, {"k": value, "n": 7}), Link(remote)] if i % 3 == 0 else ())
            span.add_event("exception", {"exception.type": "ValueError", "k": value, "n": 7})
            span.add_event("", timestamp=0)
            if i % 4 == 1:
                span.set_status(Status(StatusCode.ERROR, f"boom {i}"))
            elif i % 4 == 2:
                span.set_status(StatusCode.OK)
            span.end()
        plain.start_span("", start_time=1, attributes={"many": list(range(40))}).end(end_time=2)
    return list(exporter.get_finished_spans())


def _context(parent: SpanContext) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(NonRecordingSpan(parent))


@pytest.mark.parametrize("provider_class", [TracerProvider, FastTracerProvider])
def test_the_same_bytes_as_upstreams_encoder(provider_class: type[TracerProvider]) -> None:
    first = Resource({"service.name": "crm", "telemetry.sdk.language": "python", "process.pid": 42, "n": 7},
                     schema_url="https://opentelemetry.io/schemas/1.21.0")
    second = Resource({"service.name": "worker", "ratio": 0.5, "tags": ("a", "b")})
    spans = _spans(provider_class, first) + _spans(provider_class, second) + _spans(provider_class, first)
    for batch in (spans, spans[:1], spans[::-1], spans[5:9]):
        otlp_spans._pairs.clear()  # the first pass fills the memo, the second reads it
        for _ in range(2):
            assert encode_spans_bytes(batch) == encode_spans(batch).SerializeToString()
    assert encode_spans_bytes([]) == encode_spans([]).SerializeToString() == b""


def test_limits_and_dropped_counts_are_encoded_as_upstream() -> None:
    limits = SpanLimits(max_span_attributes=1, max_events=1, max_links=1, max_event_attributes=1,
                        max_link_attributes=1, max_attribute_length=5)
    spans = _spans(TracerProvider, Resource({"service.name": "crm"}), limits=limits)
    assert any(span.dropped_attributes and span.dropped_events and span.dropped_links for span in spans)
    assert encode_spans_bytes(spans) == encode_spans(spans).SerializeToString()


class _Text(str):
    pass


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, "\ud800", _Text("subclass"), {"a": 1}, object()])
def test_what_only_upstreams_encoder_handles_goes_to_it(value: Any) -> None:
    span = _spans(TracerProvider, Resource({"service.name": "crm"}))[0]
    span._attributes = {"odd": value}  # past the SDK's checks, as a processor could leave it
    assert encode_spans_bytes([span]) is None


def test_the_memo_is_bounded_and_skips_long_values() -> None:
    otlp_spans._pairs.clear()
    spans = _spans(TracerProvider, Resource({"service.name": "crm"}))
    for i in range(otlp_spans._pairs.limit + 5):
        spans[0]._attributes = {"id": f"lead-{i}"}
        encode_spans_bytes(spans[:1])
        assert len(otlp_spans._pairs) <= otlp_spans._pairs.limit
    otlp_spans._pairs.clear()
    spans[0]._attributes = {"long": "y" * 257, "": "an empty key is proto3's default: not written"}
    assert encode_spans_bytes(spans[:1]) == encode_spans(spans[:1]).SerializeToString()
    assert otlp_spans._pairs and not any(key[1] == "long" for key in otlp_spans._pairs)


def test_a_broken_encoder_fails_the_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: a status code written one off is caught."""
    spans = _spans(TracerProvider, Resource({"service.name": "crm"}))
    real = otlp_spans._varint
    monkeypatch.setattr(otlp_spans, "_varint", lambda value: real(value + 1) if value == 2 else real(value))
    assert encode_spans_bytes(spans) != encode_spans(spans).SerializeToString()


# --- the exporters: what the receiving end gets --------------------------------------------------

@pytest.fixture
def grpc_receiver() -> Any:
    from tests.support.otlp_receivers import grpc_trace_receiver

    with grpc_trace_receiver() as receiver:
        yield receiver


@pytest.fixture
def http_receiver() -> Any:
    import http.server
    import threading

    from tests.support.otlp_receivers import Received

    received = Received()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("fast_spans", [True, False])
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_receiver_gets_upstreams_bytes_on_either_path(request: pytest.FixtureRequest, protocol: str,
                                                          fast_spans: bool) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from otel_crm._internal.exporters import otlp_exporter
    from otel_crm._internal.settings import resolve_settings

    endpoint, received = request.getfixturevalue("grpc_receiver" if protocol == "grpc" else "http_receiver")
    settings = resolve_settings({"OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}, fast_spans=fast_spans)
    exporter = otlp_exporter(settings, "traces")
    spans = _spans(TracerProvider, Resource({"service.name": "crm"}))
    odd = _spans(TracerProvider, Resource({"service.name": "crm"}))[:2]
    odd[0]._attributes = {"huge": 2**64}  # upstream's encoder logs and skips it: its path, its bytes
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        assert exporter.export(odd) == SpanExportResult.SUCCESS
        direct = "_translate_data" in vars(exporter._exporter.current()) or protocol != "grpc"
        assert direct is (fast_spans or protocol != "grpc")
    finally:
        exporter.shutdown()
    assert received.bodies == [encode_spans(spans).SerializeToString(), encode_spans(odd).SerializeToString()]


def test_an_exporter_of_another_make_keeps_its_encoding() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter as Other

    assert otlp_spans.use_direct_encoding(Other()) is False
