"""The WSGI middleware: tenant context around the app (and its lazily iterated body), nothing
leaked after the request, the access line with the real status."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from otel_crm._internal.integrations.extractor import TenantExtractor
from otel_crm._internal.integrations.wsgi import TenantWSGIMiddleware
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import Tenant, current_tenant
from otel_crm.testing import capture_telemetry


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


def test_middleware_defaults_to_the_running_settings() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [current_tenant().id.encode()]  # type: ignore[union-attr]

    with capture_telemetry(tenant_header="X-Org"):
        body = TenantWSGIMiddleware(app)({"HTTP_X_ORG": "acme"}, lambda *a: None)
    assert list(body) == [b"acme"]


def test_a_generator_app_keeps_its_tenant_and_logs_its_real_status(caplog) -> None:  # type: ignore[no-untyped-def]
    import logging as _logging

    from otel_crm._internal.integrations.wsgi import TenantWSGIMiddleware as _Middleware
    from otel_crm._internal.tenancy import current_tenant as _current

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


def _server_app(runtime: Any, extra_headers: list[tuple[str, str]] | None = None) -> Any:
    """A bare WSGI app that opens its own SERVER span (what a WSGI instrumentation does)."""
    from opentelemetry.trace import SpanKind

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with runtime.tracer("test").start_as_current_span("GET /x", kind=SpanKind.SERVER):
            logging.getLogger("crm").info("inside the request")
            start_response("200 OK", [("Content-Type", "text/plain"), *(extra_headers or [])])
            return [b"ok"]

    return app


def _call(middleware: Any) -> list[tuple[str, str]]:
    seen: list[list[tuple[str, str]]] = []
    body = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"},
                      lambda status, headers, exc_info=None: seen.append(headers))
    assert list(body) == [b"ok"]
    return seen[0]


def test_a_bare_wsgi_app_gets_the_trace_id_headers_of_its_server_span() -> None:
    with capture_telemetry() as telemetry:
        headers = dict(_call(TenantWSGIMiddleware(_server_app(telemetry.runtime, [("Server-Timing", "db;dur=3")]))))
        server = telemetry.spans()[0]
    value = f"00-{server.context.trace_id:032x}-{server.context.span_id:016x}-01"
    assert headers["traceresponse"] == value
    assert headers["Server-Timing"] == f'db;dur=3, traceparent;desc="{value}"'


def test_trace_response_header_false_turns_both_headers_off() -> None:
    with capture_telemetry(trace_response_header=False) as telemetry:
        names = {name.lower() for name, _ in _call(TenantWSGIMiddleware(_server_app(telemetry.runtime)))}
    assert names == {"content-type"}


def _json_access_lines(run: Any) -> list[dict[str, Any]]:
    """The JSON access lines written while `run()` runs (the ordinary logging path)."""
    import io
    import json

    from otel_crm._internal.stdout import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service="s", environment="test"))
    access_logger = logging.getLogger("otel_crm.access")
    access_logger.addHandler(handler)
    level = access_logger.level
    access_logger.setLevel(logging.INFO)
    try:
        run()
    finally:
        access_logger.removeHandler(handler)
        access_logger.setLevel(level)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(("ratio", "kept"), [(0.0, False), (1.0, True)])
def test_the_access_line_carries_the_final_tail_decision(ratio: float, kept: bool) -> None:
    """Tail mode: the records written inside the request (trace undecided) claim nothing; the
    access line, written after the server span ended, carries the decision, on stdout (JSON) and
    as `crm.trace.sampled` on the log record."""
    with capture_telemetry(sampling_mode="tail", sampling_ratio=ratio) as telemetry:
        lines = _json_access_lines(lambda: _call(TenantWSGIMiddleware(_server_app(telemetry.runtime))))
        records = {r.log_record.body: r.log_record.attributes or {} for r in telemetry.logs()}
        exported = telemetry.spans()
    assert len(exported) == (1 if kept else 0)
    assert lines[0]["trace_sampled"] is kept and lines[0]["path"] == "/x"
    assert records["GET /x 200"]["crm.trace.sampled"] is kept
    assert "crm.trace.sampled" not in records["inside the request"]


@pytest.mark.parametrize(("ratio", "kept"), [(0.0, False), (1.0, True)])
def test_head_mode_records_carry_the_head_decision_from_the_start(ratio: float, kept: bool) -> None:
    with capture_telemetry(sampling_mode="head", sampling_ratio=ratio) as telemetry:
        lines = _json_access_lines(lambda: _call(TenantWSGIMiddleware(_server_app(telemetry.runtime))))
        records = {r.log_record.body: r.log_record.attributes or {} for r in telemetry.logs()}
        headers = dict(_call(TenantWSGIMiddleware(_server_app(telemetry.runtime))))
    assert lines[0]["trace_sampled"] is kept
    assert records["inside the request"]["crm.trace.sampled"] is kept
    assert headers["traceresponse"].endswith("-01" if kept else "-00")


# --- streamed bodies: tenant and trace context while the server iterates --------------------------


def test_a_streamed_flask_body_logs_with_the_tenant_and_the_trace_id() -> None:
    """Flask ends and detaches its server span (teardown) before the server iterates a streamed
    body; a generator response and `stream_with_context` alike keep the request's context."""
    from flask import Flask, Response, stream_with_context
    from opentelemetry import trace
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    from otel_crm._internal.integrations.frameworks import _patch_call

    class StreamingFlask(Flask):
        pass

    _patch_call(StreamingFlask, TenantExtractor(resolve_settings({}), Flask.request_class))
    with capture_telemetry() as telemetry:
        app = StreamingFlask("streaming")

        def rows(kind: str) -> Any:
            for index in range(2):
                logging.getLogger("crm").info("%s row %s", kind, index)
                yield f"{index}\n"

        app.add_url_rule("/plain", "plain", lambda: Response(rows("plain")))
        app.add_url_rule("/ctx", "ctx", lambda: Response(stream_with_context(rows("ctx"))))
        FlaskInstrumentor().instrument_app(app)
        try:
            client = app.test_client()
            for kind in ("plain", "ctx"):
                assert client.get(f"/{kind}", headers={"X-Tenant-ID": "acme"}).data == b"0\n1\n"
                assert current_tenant() is None and not trace.get_current_span().get_span_context().is_valid
        finally:
            FlaskInstrumentor().uninstrument_app(app)
        servers = {s.name: s.context for s in telemetry.spans() if s.kind is trace.SpanKind.SERVER}
        if not servers:
            pytest.skip("another tracer provider was installed globally first in this process")
        for kind in ("plain", "ctx"):
            records = [r.log_record for r in telemetry.logs() if str(r.log_record.body).startswith(f"{kind} row")]
            assert len(records) == 2
            for record in records:
                assert record.attributes["crm.tenant.id"] == "acme"  # type: ignore[index]
                assert (record.trace_id, record.span_id) == (servers[f"GET /{kind}"].trace_id,
                                                             servers[f"GET /{kind}"].span_id)


def test_a_produced_body_and_a_file_wrapper_are_returned_as_they_are() -> None:
    class FileWrapper:
        def __init__(self, file: Any) -> None:
            self.file = file

    produced = [b"done"]
    wrapped = FileWrapper(None)
    for body in (produced, wrapped):
        def app(environ: dict[str, Any], start_response: Any, body: Any = body) -> Any:
            start_response("200 OK", [])
            return body

        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.file_wrapper": FileWrapper}
        assert TenantWSGIMiddleware(app)(environ, lambda *args: None) is body


def test_a_streamed_body_is_closed_inside_the_context_and_leaks_nothing() -> None:
    seen: list[str | None] = []

    class Body:
        def __iter__(self) -> Any:
            seen.append(getattr(current_tenant(), "id", None))
            yield b"a"

        def close(self) -> None:
            seen.append("closed:" + str(getattr(current_tenant(), "id", None)))

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return Body()

    body = TenantWSGIMiddleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_X_TENANT_ID": "acme"},
                                     lambda *args: None)
    assert current_tenant() is None
    assert list(body) == [b"a"] and current_tenant() is None
    body.close()  # type: ignore[attr-defined]
    assert seen == ["acme", "closed:acme"] and current_tenant() is None


def test_a_server_without_request_uri_still_gets_url_path_and_query_on_the_server_span() -> None:
    """Django's runserver (wsgiref) sets neither RAW_URI nor REQUEST_URI; the WSGI instrumentation
    then records no url.path / url.query (docs/semconv.md). Ours supplies the request target."""
    import io

    from opentelemetry import trace
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [(environ.get("RAW_URI") or environ["REQUEST_URI"]).encode()]

    def environ(**extra: str) -> dict[str, Any]:
        return {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/crm", "PATH_INFO": "/leads/a b", "QUERY_STRING": "x=1",
                "SERVER_NAME": "t", "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
                **extra}

    with capture_telemetry() as telemetry:
        instrumented = TenantWSGIMiddleware(OpenTelemetryMiddleware(app, tracer_provider=telemetry.runtime
                                                                    .tracer_provider))
        assert b"".join(instrumented(environ(), lambda *args: None)) == b"/crm/leads/a%20b?x=1"
        assert b"".join(instrumented(environ(RAW_URI="/as/sent?y"), lambda *args: None)) == b"/as/sent?y"
        server = next(s for s in telemetry.spans() if s.kind is trace.SpanKind.SERVER)
    attributes = dict(server.attributes or {})
    # The conventions this process's instrumentations emit (OTEL_SEMCONV_STABILITY_OPT_IN is read
    # once per process): the stable url.path / url.query, else the old http.target. Without the
    # request target the stable ones are missing and the old mode writes http.url instead.
    if "url.path" in attributes or "http.target" not in attributes:
        assert (attributes["url.path"], attributes["url.query"]) == ("/leads/a b", "x=1")
    else:
        assert attributes["http.target"] == "/crm/leads/a%20b?x=1"
    kept = environ(REQUEST_URI="/as/sent?y")
    TenantWSGIMiddleware(app)(kept, lambda *args: None)
    assert kept["REQUEST_URI"] == "/as/sent?y" and "RAW_URI" not in kept
