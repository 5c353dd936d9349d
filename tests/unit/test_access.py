"""The access line: which span's trace it carries, the fast path (same line, fewer steps, and only
when nothing else listens), switching it off."""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import otel_crm
from otel_crm._internal.access import (
    AccessLine,
    ServerSpanCapture,
    _log_access,
    _server_spans,
    access_fast_path,
)
from otel_crm._internal.integrations.extractor import TenantExtractor
from otel_crm._internal.integrations.wsgi import TenantWSGIMiddleware
from otel_crm._internal.logs import install_log_handlers
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.stdout import JsonFormatter, LazyFlushStreamHandler
from otel_crm.testing import capture_telemetry


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
    assert _server_spans.get() is None


def test_the_line_takes_the_first_server_span_of_its_own_request_only() -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(ServerSpanCapture())
    tracer = provider.get_tracer("t")
    tracer.start_span("before", kind=trace.SpanKind.SERVER).end()
    line = AccessLine("GET", "/leads")
    try:
        tracer.start_span("client", kind=trace.SpanKind.CLIENT).end()
        first = tracer.start_span("first", kind=trace.SpanKind.SERVER)
        tracer.start_span("second", kind=trace.SpanKind.SERVER).end()
        first.end()
    finally:
        line.close()
    tracer.start_span("after", kind=trace.SpanKind.SERVER).end()
    assert line._server_span() is first, "no response started: the captured span"
    line.response_started("200 OK")  # outside any span: the current span is invalid
    assert line._server_span() is first
    with trace.use_span(tracer.start_span("current", kind=trace.SpanKind.SERVER), end_on_exit=True) as current:
        line.response_started(200)
    assert line._server_span() is current, "a valid span current at response start wins"
    assert _server_spans.get() is None


def test_the_fast_path_writes_what_the_logging_path_writes() -> None:
    """The same `_log_access` call, once through the fast path and once through logging (forced by
    a filter on the access logger): the same line but for the clock."""
    from otel_crm._internal.scrubbing import Scrubber

    root, access_logger = logging.getLogger(), logging.getLogger("otel_crm.access")
    saved, level = list(root.handlers), root.level
    out = io.StringIO()
    stream = LazyFlushStreamHandler(out)
    formatter = JsonFormatter(service="crm", environment="production",
                              scrub=Scrubber.from_settings(resolve_settings({})).scrub_text)
    stream.setFormatter(formatter)
    span = TracerProvider().get_tracer("t").start_span("GET /leads")
    path = "/leads/export?email=jane@example.com"
    try:
        root.handlers = [stream]
        root.setLevel(logging.INFO)
        access_fast_path.enable(root, [stream], stream, formatter)
        assert access_fast_path.writer() == (stream, formatter)
        with otel_crm.tenant_context("acme"):
            _log_access("GET", path, 200, time.perf_counter(), span)
            access_logger.addFilter(lambda record: True)
            assert access_fast_path.writer() is None
            _log_access("GET", path, 200, time.perf_counter(), span)
    finally:
        access_logger.filters.clear()
        access_fast_path.disable()
        root.handlers, root.level = saved, level
    fast, slow = (json.loads(line) for line in out.getvalue().splitlines())
    for line in (fast, slow):
        assert line.pop("latency_ms") >= 0 and line.pop("timestamp")
    assert fast == slow
    assert fast["tenant_id"] == "acme" and fast["status_code"] == 200 and fast["logger"] == "otel_crm.access"
    assert fast["correlation_id"] == format(span.get_span_context().trace_id, "032x")
    assert "jane@example.com" not in out.getvalue(), "scrubbed on both paths"


def test_the_access_fast_path_steps_aside_for_anything_else_that_listens() -> None:
    root = logging.getLogger()
    saved = list(root.handlers)
    stream = LazyFlushStreamHandler(io.StringIO())
    formatter = JsonFormatter(service="crm", environment="production")
    stream.setFormatter(formatter)
    access, ours = logging.getLogger("otel_crm.access"), logging.getLogger("otel_crm")
    users = logging.StreamHandler(io.StringIO())
    try:
        root.handlers = [users, stream]  # e.g. logging.basicConfig() before otel_crm started
        access_fast_path.enable(root, [stream], stream, formatter)
        assert access_fast_path.writer() is None, "a handler that was there first keeps its lines"
        root.handlers = [stream]
        access_fast_path.enable(root, [stream], stream, formatter)
        assert access_fast_path.writer() == (stream, formatter)
        for listening in (root, ours, access):
            listening.addHandler(users)
            assert access_fast_path.writer() is None, f"a handler on {listening.name!r} sees the line"
            listening.removeHandler(users)
            listening.addFilter(lambda record: True)
            assert access_fast_path.writer() is None, f"a filter on {listening.name!r} sees the line"
            listening.filters.clear()
        ours.propagate = False
        assert access_fast_path.writer() is None, "propagation off: the logging path writes nothing"
        ours.propagate = True
        assert access_fast_path.writer() == (stream, formatter)
    finally:
        ours.propagate = True
        access_fast_path.disable()
        root.handlers = saved


def test_access_log_can_be_switched_off() -> None:
    access = logging.getLogger("otel_crm.access")
    before = access.level
    try:
        settings = resolve_settings({}, logs_exporter=["none"], log_format="json", access_log=False)
        install_log_handlers(settings, None, root=logging.Logger("isolated-root-3"))
        assert not access.isEnabledFor(logging.INFO)
    finally:
        access.setLevel(before)


def test_a_status_the_access_line_cannot_read_is_reported_not_raised(no_reraise: None, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The line is written on the request path: what it raises is caught and reported (re-raised
    only under pytest, which `no_reraise` switches off here)."""
    import pytest

    from otel_crm._internal import safety

    reported: list[tuple[str, str]] = []
    monkeypatch.setattr(safety, "report_internal_error",
                        lambda component, exc, **kw: reported.append((component, type(exc).__name__)))
    previous = logging.getLogger("otel_crm.access").level
    logging.getLogger("otel_crm.access").setLevel(logging.INFO)
    try:
        line = AccessLine("GET", "/x")
        line.response_started("two hundred")  # not a status code
        line.close()
        line.write()  # swallowed: the request goes on
        assert reported == [("access_log", "ValueError")]
        safety.reraise_internal_errors(True)
        with pytest.raises(ValueError, match="two"):
            line.write()
    finally:
        logging.getLogger("otel_crm.access").setLevel(previous)
