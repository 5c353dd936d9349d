"""No-code tenant extraction and access logging for WSGI and ASGI apps.

The tenant context is opened *outside* the framework's server span (we wrap `Flask.__call__` and
Django's WSGI/ASGI handlers), so the server span, every child span and every log record of the
request see it. Tenant ids come from a header, a resolver function, or — only when trusted —
incoming W3C baggage, in that order; all are cleaned (printable, at most 128 characters).

A resolver is the user's code: when it raises, the request goes on without a tenant and the
failure is logged once and counted (`otel_crm.internal.errors`, component `tenant_resolver`).

Django gets ORM query spans from here too (Django's instrumentation has none): a connection
`execute_wrapper`, skipped when a DB-API instrumentation (sqlite3, psycopg…) already wraps the
driver connection, so queries are never traced twice. Only queries inside a trace get a span.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import context, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from otel_crm._internal.logs import access_fast_path
from otel_crm._internal.runtime import current_runtime
from otel_crm._internal.safety import error_type, guard, report_internal_error
from otel_crm._internal.settings import Settings
from otel_crm._internal.tenancy import (
    Tenant,
    clean_tenant_id,
    context_with_tenant,
    request_server_span,
    tenant_from_baggage,
)

__all__ = ["DjangoQueryTracer", "TenantASGIMiddleware", "TenantExtractor", "TenantWSGIMiddleware",
           "install_django_query_spans", "patch_frameworks"]

access_log = logging.getLogger("otel_crm.access")


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


_clean = clean_tenant_id


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
                report_internal_error("tenant_resolver", exc, raise_in_tests=False)
                self._resolver_path = ""
        return self._resolver

    def from_environ(self, environ: dict[str, Any]) -> Tenant | None:
        tenant_id = _clean(environ.get(self._tenant_key)) if self._tenant_key else None
        user_id = _clean(environ.get(self._user_key)) if self._user_key else None
        if tenant_id is None:
            tenant_id = self._resolve(environ)
        if tenant_id is None and self._trust_baggage and environ.get("HTTP_BAGGAGE"):
            incoming = tenant_from_baggage(W3CBaggagePropagator().extract(
                {"baggage": environ["HTTP_BAGGAGE"]}))
            if incoming is not None:
                return Tenant(incoming.id, user_id or incoming.user_id, incoming.tier)
        return Tenant(tenant_id, user_id) if tenant_id else None

    def _resolve(self, environ: dict[str, Any]) -> str | None:
        resolver = self._load_resolver()
        if resolver is None:
            return None
        try:
            request = self._request_factory(environ) if self._request_factory else environ
            resolved = resolver(request)
        except Exception as exc:  # the user's code: never fail the request, never re-raise
            report_internal_error("tenant_resolver", exc, raise_in_tests=False)
            return None
        return _clean(resolved) if resolved else None


def _log_access(method: str, path: str, status: int, started: float, span: Any) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    fast = access_fast_path.writer()
    if fast is not None:  # the same line, minus a LogRecord and the handler dispatch
        stream, formatter = fast
        span_context = span.get_span_context() if span is not None else trace.INVALID_SPAN_CONTEXT
        if not span_context.is_valid:
            span_context = trace.get_current_span().get_span_context()
        try:
            stream.write_line(formatter.access_line(method, path, status, latency_ms, span_context=span_context))
            return
        except Exception:  # noqa: S110 - e.g. a closed stdout: the logging path reports it as logging does
            pass
    extra = {"method": method, "path": path, "status_code": status, "latency_ms": latency_ms}
    if span is not None and span.get_span_context().is_valid:
        with trace.use_span(span, end_on_exit=False):
            access_log.info("%s %s %s", method, path, status, extra=extra)
    else:
        access_log.info("%s %s %s", method, path, status, extra=extra)


def _default_extractor() -> TenantExtractor:
    return TenantExtractor(current_runtime().settings)


class TenantWSGIMiddleware:
    """Wrap any WSGI app: ``application = TenantWSGIMiddleware(application)``.

    Without an extractor, the settings of the running otel_crm (or of the environment) are used.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], extractor: TenantExtractor | None = None):
        self.app = app
        self._extractor = extractor or _default_extractor()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return wsgi_call(self.app, self._extractor, environ, start_response)


def _server_span(seen: dict[str, Any], holder: list[Any]) -> Any:
    span = seen.get("span")
    if span is not None and span.get_span_context().is_valid:
        return span
    return holder[0] if holder else None


def wsgi_call(app: Callable[..., Iterable[bytes]], extractor: TenantExtractor, environ: dict[str, Any],
              start_response: Callable[..., Any]) -> Iterable[bytes]:
    started = time.perf_counter()
    token = None
    holder: list[Any] = []
    holder_token = request_server_span.set(holder)
    seen: dict[str, Any] = {}
    tenant = None
    try:
        tenant = extractor.from_environ(environ)
        if tenant is not None:
            token = context.attach(context_with_tenant(tenant))
    except Exception:
        with guard("tenant_extraction"):
            raise

    def capturing_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        seen["status"] = status
        seen["span"] = trace.get_current_span()
        return start_response(status, headers, exc_info)

    def log_access() -> None:
        if access_log.isEnabledFor(logging.INFO):
            with guard("access_log"):
                status = int(str(seen.get("status", "500")).split(" ", 1)[0])
                _log_access(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/"),
                            status, started, _server_span(seen, holder))

    lazy = False
    try:
        result = app(environ, capturing_start_response)
        if "status" not in seen:
            # A generator app (or a streamed response) runs its body while the server iterates:
            # re-open the tenant context around each chunk and log when the body is done.
            lazy = True
            return _LazyBody(result, tenant, log_access)
        return result
    finally:
        # The access line is logged inside the tenant context (it carries the tenant), then the
        # context is detached before returning: a server that never calls close() must not leak
        # the tenant into the next request on this thread.
        try:
            if not lazy:
                log_access()
        finally:
            if token is not None:
                context.detach(token)
            request_server_span.reset(holder_token)


class _LazyBody:
    """A WSGI body produced during iteration, run chunk by chunk inside the request's tenant
    context (attached and detached around each chunk, so nothing leaks between requests)."""

    def __init__(self, body: Iterable[bytes], tenant: Any, on_done: Callable[[], None]):
        self._body = body
        self._iterator: Any = None
        self._tenant = tenant
        self._on_done = on_done
        self._done = False

    def __iter__(self) -> _LazyBody:
        return self

    def __next__(self) -> bytes:
        token = context.attach(context_with_tenant(self._tenant)) if self._tenant is not None else None
        try:
            if self._iterator is None:
                self._iterator = iter(self._body)
            return next(self._iterator)  # type: ignore[no-any-return]
        except StopIteration:
            self._finish()
            raise
        finally:
            if token is not None:
                context.detach(token)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        token = context.attach(context_with_tenant(self._tenant)) if self._tenant is not None else None
        try:
            self._on_done()
        finally:
            if token is not None:
                context.detach(token)


class TenantASGIMiddleware:
    """Wrap any ASGI app: ``app = TenantASGIMiddleware(app)`` (extractor optional, as for WSGI).

    HTTP and websocket scopes get the tenant context; HTTP requests get the access log line.
    """

    def __init__(self, app: Callable[..., Any], extractor: TenantExtractor | None = None):
        self.app = app
        self._extractor = extractor or _default_extractor()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        environ: dict[str, Any] = {"HTTP_" + k.decode("latin-1").upper().replace("-", "_"): v.decode("latin-1")
                                   for k, v in scope.get("headers", [])}
        environ["REQUEST_METHOD"] = scope.get("method", "GET")
        environ["PATH_INFO"] = scope.get("path", "/")
        environ["QUERY_STRING"] = scope.get("query_string", b"").decode("latin-1")
        token = None
        holder: list[Any] = []
        holder_token = request_server_span.set(holder)
        with guard("tenant_extraction"):
            tenant = self._extractor.from_environ(environ)
            if tenant is not None:
                token = context.attach(context_with_tenant(tenant))
        seen: dict[str, Any] = {"status": 500}

        async def capturing_send(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                seen["status"] = message.get("status", 500)
                seen["span"] = trace.get_current_span()
            await send(message)

        try:
            await self.app(scope, receive, capturing_send if scope["type"] == "http" else send)
        finally:
            try:
                if scope["type"] == "http":
                    with guard("access_log"):
                        _log_access(environ["REQUEST_METHOD"], environ["PATH_INFO"], int(seen["status"]),
                                    started, _server_span(seen, holder))
            finally:
                if token is not None:
                    context.detach(token)
                request_server_span.reset(holder_token)


def _patch_call(cls: type, extractor: TenantExtractor, asgi: bool = False) -> None:
    original = cls.__dict__.get("__call__") or getattr(cls, "__call__")  # noqa: B004, B009
    if getattr(original, "_otel_crm_patched", False):
        return
    if asgi:

        @functools.wraps(original)
        async def async_call(self: Any, scope: Any, receive: Any, send: Any) -> None:
            await TenantASGIMiddleware(functools.partial(original, self), extractor)(scope, receive, send)

        async_call._otel_crm_patched = True  # type: ignore[attr-defined]
        setattr(cls, "__call__", async_call)  # noqa: B010
        return

    @functools.wraps(original)
    def call(self: Any, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return wsgi_call(functools.partial(original, self), extractor, environ, start_response)

    call._otel_crm_patched = True  # type: ignore[attr-defined]
    setattr(cls, "__call__", call)  # noqa: B010


def patch_frameworks(settings: Settings, installed: Callable[[str], bool]) -> list[str]:
    """Open the tenant context around Flask and Django apps; returns what was patched."""
    patched: list[str] = []
    if installed("flask"):
        with guard("patch_flask"):
            import flask

            _patch_call(flask.Flask, TenantExtractor(settings, flask.Request))
            patched.append("flask")
    if installed("django"):
        with guard("patch_django"):
            from django.core.handlers.asgi import ASGIHandler
            from django.core.handlers.wsgi import WSGIHandler, WSGIRequest

            _patch_call(WSGIHandler, TenantExtractor(settings, WSGIRequest))
            _patch_call(ASGIHandler, TenantExtractor(settings), asgi=True)
            patched.append("django")
        with guard("patch_django_db"):
            install_django_query_spans()
            patched.append("django.db")
    return patched


# --- Django ORM query spans -------------------------------------------------------------------

_DB_SYSTEMS = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mysql", "oracle": "oracle.db"}
_SQL_OPERATION = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(\w+)", re.DOTALL)
_SQL_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|TABLE|JOIN)\s+[\"`\[]?([\w.]+)", re.IGNORECASE)


def _sql_summary(sql: str) -> tuple[str, str]:
    """(`db.operation.name`, `db.collection.name`) of a statement; either may be empty."""
    operation = _SQL_OPERATION.match(sql)
    table = _SQL_TABLE.search(sql)
    return (operation.group(1).upper() if operation else "", table.group(1) if table else "")


class DjangoQueryTracer:
    """A Django `execute_wrapper`: one CLIENT span per query, stable database conventions."""

    def __init__(self, vendor: str, host: str | None = None, port: Any = None):
        self._system = _DB_SYSTEMS.get(vendor, vendor or "other_sql")
        self._server: dict[str, Any] = {}
        if host and vendor != "sqlite":
            self._server["server.address"] = host
            if port:
                self._server["server.port"] = int(port)
        self._tracer: trace.Tracer | None = None

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool,
                 ctx: dict[str, Any]) -> Any:
        # Queries outside any trace (startup checks, migrations, a bare management command) would
        # each become a one-span trace and an "entry" for RED metrics: trace them only in a trace.
        if not trace.get_current_span().get_span_context().is_valid or not is_instrumentation_enabled():
            return execute(sql, params, many, ctx)
        tracer = self._tracer
        if tracer is None:
            tracer = self._tracer = trace.get_tracer("otel_crm.django.db")
        operation, table = _sql_summary(sql) if isinstance(sql, str) else ("", "")
        attributes: dict[str, Any] = {"db.system.name": self._system, **self._server}
        if isinstance(sql, str):
            attributes["db.query.text"] = sql  # Django passes literals as parameters, never inline
        if operation:
            attributes["db.operation.name"] = operation
        if table:
            attributes["db.collection.name"] = table
        if many and isinstance(params, (list, tuple)):
            attributes["db.operation.batch.size"] = len(params)
        name = f"{operation} {table}".strip() or self._system
        with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes) as span:
            try:
                return execute(sql, params, many, ctx)
            except Exception as exc:
                span.set_attribute("error.type", error_type(exc))
                raise


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    with guard("django_db"):
        wrappers = connection.execute_wrappers
        if any(isinstance(w, DjangoQueryTracer) for w in wrappers):
            return
        # A DB-API instrumentation (sqlite3, psycopg2, psycopg, mysqlclient) wraps the driver
        # connection in a proxy with __wrapped__: it traces the queries already.
        if hasattr(getattr(connection, "connection", None), "__wrapped__"):
            return
        settings = getattr(connection, "settings_dict", {}) or {}
        wrappers.append(DjangoQueryTracer(getattr(connection, "vendor", ""), settings.get("HOST"),
                                          settings.get("PORT")))


def install_django_query_spans() -> None:
    from django.db.backends.signals import connection_created

    connection_created.connect(_on_connection_created, weak=False, dispatch_uid="otel_crm.django_db")
