"""No-code tenant extraction and access logging for WSGI and ASGI apps.

The tenant context is opened *outside* the framework's server span (we wrap `Flask.__call__` and
Django's WSGI/ASGI handlers), so the server span, every child span and every log record of the
request see it. Tenant ids come from a header, a resolver function, or — only when trusted —
incoming W3C baggage.
"""

from __future__ import annotations

import functools
import importlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import context, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator

from otel_crm._internal.safety import guard, internal_error
from otel_crm._internal.settings import Settings
from otel_crm._internal.tenancy import Tenant, context_with_tenant, tenant_from_baggage

__all__ = ["TenantASGIMiddleware", "TenantExtractor", "TenantWSGIMiddleware", "patch_frameworks"]

access_log = logging.getLogger("otel_crm.access")
_MAX_ID = 128


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def _clean(value: str | None) -> str | None:
    if not value:
        return None
    value = "".join(ch for ch in value.strip() if ch.isprintable())[:_MAX_ID]
    return value or None


class TenantExtractor:
    def __init__(self, settings: Settings, request_factory: Callable[[dict[str, Any]], Any] | None = None):
        self._tenant_key = _environ_key(settings.tenant_header) if settings.tenant_header else None
        self._user_key = _environ_key(settings.user_header) if settings.user_header else None
        self._trust_baggage = settings.trust_incoming_baggage
        self._resolver_path = settings.tenant_resolver
        self._resolver: Callable[[Any], Any] | None = None
        self._request_factory = request_factory

    def _load_resolver(self) -> Callable[[Any], Any] | None:
        if self._resolver is None and self._resolver_path:
            module, _, name = self._resolver_path.partition(":")
            try:
                self._resolver = getattr(importlib.import_module(module), name)
            except Exception as exc:
                internal_error("tenant_resolver", exc)
                self._resolver_path = ""
        return self._resolver

    def from_environ(self, environ: dict[str, Any]) -> Tenant | None:
        tenant_id = _clean(environ.get(self._tenant_key)) if self._tenant_key else None
        user_id = _clean(environ.get(self._user_key)) if self._user_key else None
        resolver = self._load_resolver()
        if tenant_id is None and resolver is not None:
            request = self._request_factory(environ) if self._request_factory else environ
            with guard("tenant_resolver"):
                resolved = resolver(request)
                tenant_id = _clean(str(resolved)) if resolved else None
        if tenant_id is None and self._trust_baggage and environ.get("HTTP_BAGGAGE"):
            incoming = tenant_from_baggage(W3CBaggagePropagator().extract(
                {"baggage": environ["HTTP_BAGGAGE"]}))
            if incoming is not None:
                return Tenant(_clean(incoming.id) or incoming.id, user_id or incoming.user_id,
                              incoming.tier)
        return Tenant(tenant_id, user_id) if tenant_id else None


def _log_access(method: str, path: str, status: int, started: float, span: Any) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    extra = {"method": method, "path": path, "status_code": status, "latency_ms": latency_ms}
    if span is not None and span.get_span_context().is_valid:
        with trace.use_span(span, end_on_exit=False):
            access_log.info("%s %s %s", method, path, status, extra=extra)
    else:
        access_log.info("%s %s %s", method, path, status, extra=extra)


class TenantWSGIMiddleware:
    """Wrap any WSGI app: ``app.wsgi_app = TenantWSGIMiddleware(app.wsgi_app, settings)``."""

    def __init__(self, app: Callable[..., Iterable[bytes]], extractor: TenantExtractor):
        self.app = app
        self._extractor = extractor

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return wsgi_call(self.app, self._extractor, environ, start_response)


def wsgi_call(app: Callable[..., Iterable[bytes]], extractor: TenantExtractor, environ: dict[str, Any],
              start_response: Callable[..., Any]) -> Iterable[bytes]:
    started = time.perf_counter()
    token = None
    seen: dict[str, Any] = {}
    with guard("tenant_extraction"):
        tenant = extractor.from_environ(environ)
        if tenant is not None:
            token = context.attach(context_with_tenant(tenant))

    def capturing_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        seen["status"] = status
        seen["span"] = trace.get_current_span()
        return start_response(status, headers, exc_info)

    status = 500
    try:
        result = app(environ, capturing_start_response)
        status = int(str(seen.get("status", "500")).split(" ", 1)[0])
        return result
    finally:
        # Detach before returning: a server that never calls close() must not leak the tenant
        # into the next request on this thread.
        if token is not None:
            context.detach(token)
        with guard("access_log"):
            _log_access(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/"), status,
                        started, seen.get("span"))


class TenantASGIMiddleware:
    """Wrap any ASGI app; HTTP and websocket scopes get the tenant context."""

    def __init__(self, app: Callable[..., Any], extractor: TenantExtractor):
        self.app = app
        self._extractor = extractor

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        environ = {"HTTP_" + k.decode("latin-1").upper().replace("-", "_"): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        token = None
        with guard("tenant_extraction"):
            tenant = self._extractor.from_environ(environ)
            if tenant is not None:
                token = context.attach(context_with_tenant(tenant))
        try:
            await self.app(scope, receive, send)
        finally:
            if token is not None:
                context.detach(token)


def _patch_call(cls: type, extractor: TenantExtractor, asgi: bool = False) -> None:
    original = cls.__call__  # type: ignore[operator]
    if getattr(original, "_otel_crm_patched", False):
        return
    if asgi:

        @functools.wraps(original)
        async def async_call(self: Any, scope: Any, receive: Any, send: Any) -> None:
            await TenantASGIMiddleware(functools.partial(original, self), extractor)(scope, receive, send)

        async_call._otel_crm_patched = True  # type: ignore[attr-defined]
        cls.__call__ = async_call  # type: ignore[operator]
        return

    @functools.wraps(original)
    def call(self: Any, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return wsgi_call(functools.partial(original, self), extractor, environ, start_response)

    call._otel_crm_patched = True  # type: ignore[attr-defined]
    cls.__call__ = call  # type: ignore[operator]


def patch_frameworks(settings: Settings, installed: Callable[[str], bool]) -> list[str]:
    """Open the tenant context around Flask and Django apps; returns what was patched."""
    patched: list[str] = []
    if installed("flask"):
        with guard("patch_flask"):
            import flask

            _patch_call(flask.Flask, TenantExtractor(settings, lambda env: flask.Request(env)))
            patched.append("flask")
    if installed("django"):
        with guard("patch_django"):
            from django.core.handlers.asgi import ASGIHandler
            from django.core.handlers.wsgi import WSGIHandler, WSGIRequest

            _patch_call(WSGIHandler, TenantExtractor(settings, WSGIRequest))
            _patch_call(ASGIHandler, TenantExtractor(settings), asgi=True)
            patched.append("django")
    return patched
