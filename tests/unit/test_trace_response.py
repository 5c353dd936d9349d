"""The trace id response headers: format (W3C Trace Context level 2 `traceresponse`,
`Server-Timing: traceparent`), an existing Server-Timing extended, no duplicates, invalid contexts."""

from __future__ import annotations

import re

from opentelemetry.trace import INVALID_SPAN_CONTEXT, SpanContext, TraceFlags

from otel_crm._internal.trace_response import asgi_trace_headers, traceresponse_value, wsgi_trace_headers

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
# Level 2: version "-" trace-id "-" child-id "-" trace-flags, lowercase hex.
W3C = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def _context(sampled: bool = True) -> SpanContext:
    return SpanContext(TRACE_ID, SPAN_ID, is_remote=False,
                       trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT))


def test_value_is_the_w3c_format_with_the_sampled_flag() -> None:
    value = traceresponse_value(_context())
    assert value == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert W3C.match(value)
    assert traceresponse_value(_context(sampled=False)) == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    assert traceresponse_value(INVALID_SPAN_CONTEXT) is None


def test_wsgi_headers_are_added_to_a_copy() -> None:
    headers = [("Content-Type", "text/plain")]
    out = wsgi_trace_headers(headers, _context())
    assert headers == [("Content-Type", "text/plain")]
    value = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert out == [("Content-Type", "text/plain"), ("Server-Timing", f'traceparent;desc="{value}"'),
                   ("traceresponse", value)]


def test_an_existing_server_timing_header_is_extended_not_replaced() -> None:
    out = wsgi_trace_headers([("server-timing", "db;dur=53, app;dur=47.2")], _context())
    assert out[0] == ("server-timing",
                      'db;dur=53, app;dur=47.2, traceparent;desc="00-0af7651916cd43dd8448eb211c80319c-'
                      'b7ad6b7169203331-01"')
    assert [name for name, _ in out].count("server-timing") == 1 and "Server-Timing" not in dict(out)


def test_a_response_with_a_traceresponse_already_is_left_alone() -> None:
    """Two otel_crm integrations around one app (a patched Flask inside a TenantWSGIMiddleware): the
    inner one wrote the headers, the outer one adds nothing."""
    inner = wsgi_trace_headers([], _context())
    assert wsgi_trace_headers(inner, SpanContext(1, 2, False, TraceFlags(1))) == inner
    inner_asgi = asgi_trace_headers([], _context())
    assert asgi_trace_headers(inner_asgi, SpanContext(1, 2, False, TraceFlags(1))) == inner_asgi


def test_no_valid_span_no_headers() -> None:
    assert wsgi_trace_headers([("a", "b")], INVALID_SPAN_CONTEXT) == [("a", "b")]
    assert asgi_trace_headers([(b"a", b"b")], INVALID_SPAN_CONTEXT) == [(b"a", b"b")]


def test_asgi_headers_are_byte_pairs_and_extend_server_timing() -> None:
    value = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    assert asgi_trace_headers([[b"content-type", b"text/plain"]], _context(sampled=False)) == [
        (b"content-type", b"text/plain"), (b"server-timing", b'traceparent;desc="' + value + b'"'),
        (b"traceresponse", value)]
    out = asgi_trace_headers([(b"server-timing", b"cache;desc=hit")], _context(sampled=False))
    assert out[0] == (b"server-timing", b'cache;desc=hit, traceparent;desc="' + value + b'"')
