"""The ASGI middleware: tenant context for HTTP (not lifespan) scopes, the access line."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from otel_crm._internal.integrations.asgi import TenantASGIMiddleware
from otel_crm._internal.integrations.extractor import TenantExtractor
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import current_tenant
from otel_crm.testing import capture_telemetry


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


def _asgi_run(runtime: Any, headers: list[tuple[bytes, bytes]]
              ) -> tuple[list[dict[str, Any]], Any]:
    """An ASGI app that opens its SERVER span and starts the response inside a child span (as the
    ASGI instrumentation's `http send` span does): the header must name the server span."""
    from opentelemetry.trace import SpanKind

    server_spans: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        tracer = runtime.tracer("test")
        with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER) as server:
            server_spans.append(server)
            with tracer.start_as_current_span("GET /x http send"):
                await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
            await send({"type": "http.response.body", "body": b"ok"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(TenantASGIMiddleware(app)({"type": "http", "method": "GET", "path": "/x", "headers": []},
                                          None, send))
    return sent, server_spans[0].get_span_context()


def test_an_asgi_app_gets_the_trace_id_headers_of_its_server_span() -> None:
    with capture_telemetry() as telemetry:
        sent, server = _asgi_run(telemetry.runtime, [(b"server-timing", b"db;dur=3")])
    value = f"00-{server.trace_id:032x}-{server.span_id:016x}-01".encode()
    headers = dict(sent[0]["headers"])
    assert headers[b"traceresponse"] == value
    assert headers[b"server-timing"] == b'db;dur=3, traceparent;desc="' + value + b'"'
    assert sent[1]["body"] == b"ok"


def test_asgi_trace_response_header_off() -> None:
    with capture_telemetry(trace_response_header=False) as telemetry:
        sent, _ = _asgi_run(telemetry.runtime, [])
    assert sent[0]["headers"] == []


def _streaming_app(tracer: Any, *, from_child_task: bool = False) -> Any:
    """What Django's ASGI handler does with a streamed response: the server span is ended and
    detached (middleware) before the response starts and the body is produced."""
    from opentelemetry.trace import SpanKind

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        with tracer.start_as_current_span("GET /export", kind=SpanKind.SERVER):
            pass

        async def respond() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for index in range(2):
                logging.getLogger("crm").info("row %s", index)
                await send({"type": "http.response.body", "body": b"x", "more_body": index == 0})

        if from_child_task:
            await asyncio.create_task(respond())
        else:
            await respond()

    return app


def test_a_streamed_asgi_body_logs_with_the_tenant_and_the_trace_id() -> None:
    from opentelemetry import trace

    async def send(message: dict[str, Any]) -> None:
        return None

    with capture_telemetry() as telemetry:
        for child in (False, True):
            middleware = TenantASGIMiddleware(_streaming_app(telemetry.runtime.tracer("t"), from_child_task=child),
                                              TenantExtractor(resolve_settings({})))

            async def run(middleware: Any = middleware) -> None:
                await middleware({"type": "http", "method": "GET", "path": "/export",
                                  "headers": [(b"x-tenant-id", b"acme")]}, None, send)
                assert current_tenant() is None and not trace.get_current_span().get_span_context().is_valid

            asyncio.run(run())
        servers = [s.context for s in telemetry.spans() if s.name == "GET /export"]
        rows = [r.log_record for r in telemetry.logs() if str(r.log_record.body).startswith("row")]
        assert len(servers) == 2 and len(rows) == 4
        for server, records in zip(servers, (rows[:2], rows[2:]), strict=True):
            for record in records:
                assert record.attributes["crm.tenant.id"] == "acme"  # type: ignore[index]
                assert (record.trace_id, record.span_id) == (server.trace_id, server.span_id)
        assert not [r for r in telemetry.logs() if "detach" in str(r.log_record.body).lower()]
