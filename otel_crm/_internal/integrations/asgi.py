"""Tenant context and access line around any ASGI app (HTTP and websocket scopes get the tenant
context; HTTP requests get the access line and the trace id response headers, `trace_response.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import Token
from typing import Any

from opentelemetry import context, trace
from opentelemetry.context import Context

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


_Held = tuple[Token[Context], "asyncio.Task[Any] | None"]


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # not under asyncio (trio): one task per request there
        return None


def _keep_server_span(access: AccessLine) -> list[_Held]:
    """When the response starts after the framework ended and detached its server span (Django's
    middleware does, before a streamed body is produced), make that span current again for the
    rest of the response, so log records of the body keep the trace id (the tenant is current
    already: we opened it around the whole call)."""
    if trace.get_current_span().get_span_context().is_valid:
        return []
    span_context = access.server_span_context()
    if not span_context.is_valid:
        return []
    token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span_context)))
    return [(token, _current_task())]


def _release_server_span(held: list[_Held]) -> None:
    # Only in the task that attached it: a response sent from a child task (a task group) leaves
    # its copy of the context with that task.
    for token, task in held:
        if task is _current_task():
            context.detach(token)


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
        span_token: list[_Held] = []

        async def capturing_send(message: Message) -> None:
            if message.get("type") == "http.response.start":
                access.response_started(message.get("status", 500))
                if not span_token:
                    span_token.extend(_keep_server_span(access))
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
                _release_server_span(span_token)
                if token is not None:
                    context.detach(token)
                access.close()
