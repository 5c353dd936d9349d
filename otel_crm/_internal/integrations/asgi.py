"""Tenant context and access line around any ASGI app (HTTP and websocket scopes get the tenant
context; HTTP requests get the access line and the trace id response headers, `trace_response.py`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import context

from otel_crm._internal.access import AccessLine
from otel_crm._internal.integrations.extractor import TenantExtractor, default_extractor
from otel_crm._internal.runtime import current_runtime
from otel_crm._internal.safety import guard
from otel_crm._internal.tenancy import context_with_tenant
from otel_crm._internal.trace_response import asgi_trace_headers

__all__ = ["TenantASGIMiddleware"]

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _environ(scope: dict[str, Any]) -> dict[str, Any]:
    """The WSGI-style environ the extractor reads, built from the scope's headers."""
    environ: dict[str, Any] = {"HTTP_" + k.decode("latin-1").upper().replace("-", "_"): v.decode("latin-1")
                               for k, v in scope.get("headers", [])}
    environ["REQUEST_METHOD"] = scope.get("method", "GET")
    environ["PATH_INFO"] = scope.get("path", "/")
    environ["QUERY_STRING"] = scope.get("query_string", b"").decode("latin-1")
    return environ


class TenantASGIMiddleware:
    """Wrap any ASGI app: ``app = TenantASGIMiddleware(app)`` (extractor optional, as for WSGI)."""

    def __init__(self, app: ASGIApp, extractor: TenantExtractor | None = None):
        self.app = app
        self._extractor = extractor or default_extractor()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        environ = _environ(scope)
        access = AccessLine(environ["REQUEST_METHOD"], environ["PATH_INFO"])
        token = None
        with guard("tenant_extraction"):
            tenant = self._extractor.from_environ(environ)
            if tenant is not None:
                token = context.attach(context_with_tenant(tenant))

        trace_headers = current_runtime().settings.trace_response_header

        async def capturing_send(message: Message) -> None:
            if message.get("type") == "http.response.start":
                access.response_started(message.get("status", 500))
                if trace_headers:
                    try:
                        message["headers"] = asgi_trace_headers(message.get("headers") or (),
                                                                access.server_span_context())
                    except Exception:
                        with guard("trace_response"):
                            raise
            await send(message)

        try:
            await self.app(scope, receive, capturing_send if scope["type"] == "http" else send)
        finally:
            try:
                if scope["type"] == "http":
                    access.write()
            finally:
                if token is not None:
                    context.detach(token)
                access.close()
