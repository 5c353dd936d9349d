"""The trace id in the HTTP response: `traceresponse` (W3C Trace Context level 2) and
`Server-Timing: traceparent;desc="…"` (read by browsers' devtools and RUM scripts), added by the
WSGI/ASGI integrations when the response starts (`trace_response_header`, default on).

Both carry `00-<trace-id>-<span-id of the server span>-<flags>`; the flags say whether the trace is
sampled *at the head* (`01`). In tail mode every trace is `01` then: the final decision is taken
when the request's spans have ended, after the headers went out (the access line says it:
`trace_sampled`). An existing Server-Timing header is extended, not replaced; a response that
already carries `traceresponse` (an inner otel_crm integration, or the app itself) is left as is.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.trace import SpanContext

__all__ = ["asgi_trace_headers", "traceresponse_value", "wsgi_trace_headers"]

_SAMPLED = 0x01


def traceresponse_value(span_context: SpanContext) -> str | None:
    """`00-<trace-id>-<span-id>-<flags>` of a valid span context, else None."""
    if not span_context.is_valid:
        return None
    flags = "01" if span_context.trace_flags & _SAMPLED else "00"
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags}"


def wsgi_trace_headers(headers: Iterable[tuple[str, str]], span_context: SpanContext) -> list[tuple[str, str]]:
    """A copy of a WSGI header list with both headers added (the input list is not changed)."""
    out = list(headers)
    value = traceresponse_value(span_context)
    if value is None:
        return out
    timing = -1
    for index, (name, _) in enumerate(out):
        lowered = name.lower()
        if lowered == "traceresponse":
            return out
        if lowered == "server-timing" and timing < 0:
            timing = index
    metric = f'traceparent;desc="{value}"'
    if timing < 0:
        out.append(("Server-Timing", metric))
    else:
        name, existing = out[timing]
        out[timing] = (name, f"{existing}, {metric}" if existing.strip() else metric)
    out.append(("traceresponse", value))
    return out


def asgi_trace_headers(headers: Iterable[tuple[bytes, bytes]] | Iterable[list[bytes]],
                       span_context: SpanContext) -> list[tuple[bytes, bytes]]:
    """A new ASGI header list (byte pairs) with both headers added."""
    out = [(bytes(name), bytes(value)) for name, value in headers]
    value = traceresponse_value(span_context)
    if value is None:
        return out
    timing = -1
    for index, (name, _) in enumerate(out):
        lowered = name.lower()
        if lowered == b"traceresponse":
            return out
        if lowered == b"server-timing" and timing < 0:
            timing = index
    encoded = value.encode("ascii")
    metric = b'traceparent;desc="' + encoded + b'"'
    if timing < 0:
        out.append((b"server-timing", metric))
    else:
        name, existing = out[timing]
        out[timing] = (name, existing + b", " + metric if existing.strip() else metric)
    out.append((b"traceresponse", encoded))
    return out
