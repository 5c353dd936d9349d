"""The request's server span, kept for the whole WSGI/ASGI call.

Set by the access line (`access.py`) for one request: the first SERVER span started in it lands
here. Frameworks end and detach that span before the request is over — Django's instrumentation
does in its middleware, and Django then logs `Not Found: /x` on `django.request` — so lines
written in that tail still find their trace id here (`stdout.py`). A plain ContextVar:
instrumentations replace the OpenTelemetry context wholesale when they extract, this survives that.
"""

from __future__ import annotations

import contextvars

from opentelemetry import trace
from opentelemetry.sdk.trace import Span
from opentelemetry.trace import SpanContext

__all__ = ["request_span_context", "server_spans"]

server_spans: contextvars.ContextVar[list[Span] | None] = contextvars.ContextVar(
    "otel_crm_request_server_span", default=None)


def request_span_context() -> SpanContext:
    """The current span's context; inside a request whose server span was detached already,
    that server span's (it may have ended: its ids still name the request's trace)."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return span_context
    spans = server_spans.get()
    if spans:
        return spans[0].get_span_context()
    return span_context
