"""Tenant context, access line and the trace id response headers (`trace_response.py`) around
any WSGI app.

The tenant context is opened *outside* the framework's server span when we wrap the app itself
(`frameworks.py` wraps `Flask.__call__` and Django's WSGI handler), so the server span, every
child span and every log record of the request see it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

from opentelemetry import context, trace

from otel_crm._internal.access import AccessLine
from otel_crm._internal.integrations.extractor import TenantExtractor, default_extractor
from otel_crm._internal.runtime import current_runtime
from otel_crm._internal.safety import guard
from otel_crm._internal.tenancy import Tenant, context_with_tenant
from otel_crm._internal.trace_response import wsgi_trace_headers

__all__ = ["TenantWSGIMiddleware", "wsgi_call"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class TenantWSGIMiddleware:
    """Wrap any WSGI app: ``application = TenantWSGIMiddleware(application)``.

    Without an extractor, the settings of the running otel_crm (or of the environment) are used.
    """

    def __init__(self, app: WSGIApp, extractor: TenantExtractor | None = None):
        self.app = app
        self._extractor = extractor or default_extractor()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return wsgi_call(self.app, self._extractor, environ, start_response)


def wsgi_call(app: WSGIApp, extractor: TenantExtractor, environ: dict[str, Any],
              start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Call `app` inside the request's tenant context and write its access line."""
    if "RAW_URI" not in environ and "REQUEST_URI" not in environ:
        _add_request_target(environ)
    access = AccessLine(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/"))
    token = None
    tenant = None
    try:
        tenant = extractor.from_environ(environ)
        if tenant is not None:
            token = context.attach(context_with_tenant(tenant))
    except Exception:
        with guard("tenant_extraction"):
            raise

    trace_headers = current_runtime().settings.trace_response_header

    def capturing_start_response(status: str, headers: Any, exc_info: ExcInfo | None = None) -> Any:
        access.response_started(status)
        if trace_headers:
            try:
                headers = wsgi_trace_headers(headers, access.server_span_context())
            except Exception:
                with guard("trace_response"):
                    raise
        return start_response(status, headers, exc_info)

    lazy = False
    try:
        result = app(environ, capturing_start_response)
        if not access.responded:
            # A generator app (or a streamed response) runs its body while the server iterates:
            # re-open the tenant context around each chunk and log when the body is done.
            lazy = True
            return _LazyBody(result, tenant, access.write)
        if isinstance(result, (list, tuple)) or _is_file_wrapper(result, environ):
            return result  # produced already (or sent by the server itself): nothing runs while sent
        return _CurrentBody(result, _body_context(access))
    finally:
        # The access line is logged inside the tenant context (it carries the tenant), then the
        # context is detached before returning: a server that never calls close() must not leak
        # the tenant into the next request on this thread.
        try:
            if not lazy:
                access.write()
        finally:
            if token is not None:
                context.detach(token)
            access.close()


def _add_request_target(environ: dict[str, Any]) -> None:
    """Servers that give neither RAW_URI nor REQUEST_URI (Django's runserver, wsgiref): the WSGI
    instrumentation then records no url.path / url.query on the server span (docs/semconv.md,
    "what otel_crm corrects"). Give it the request target, rebuilt as the client sent it."""
    with guard("request_target"):
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        target = quote(path.encode("latin-1"), safe="/:@!$&'()*+,;=-._~") or "/"
        query = environ.get("QUERY_STRING")
        environ["REQUEST_URI"] = f"{target}?{query}" if query else target


def _is_file_wrapper(result: object, environ: dict[str, Any]) -> bool:
    wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(wrapper, type) and isinstance(result, wrapper)


def _body_context(access: AccessLine) -> context.Context:
    """The context a response body is iterated in: the request's (tenant included) and its server
    span, which frameworks end and detach before the server iterates the body (Flask's teardown,
    Django's middleware), so log records of a streamed body keep the trace id."""
    current = context.get_current()
    if not trace.get_current_span(current).get_span_context().is_valid:
        span_context = access.server_span_context()
        if span_context.is_valid:
            return trace.set_span_in_context(trace.NonRecordingSpan(span_context), current)
    return current


class _CurrentBody:
    """A response body iterated (and closed) inside the request's context, attached around each
    chunk only: nothing leaks to the server thread between chunks or into the next request."""

    __slots__ = ("_body", "_context", "_iterator")

    def __init__(self, body: Iterable[bytes], ctx: context.Context):
        self._body = body
        self._context = ctx
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> _CurrentBody:
        return self

    def __next__(self) -> bytes:
        token = context.attach(self._context)
        try:
            if self._iterator is None:
                self._iterator = iter(self._body)
            return next(self._iterator)
        finally:
            context.detach(token)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            token = context.attach(self._context)
            try:
                close()
            finally:
                context.detach(token)


class _LazyBody:
    """A WSGI body produced during iteration, run chunk by chunk inside the request's tenant
    context (attached and detached around each chunk, so nothing leaks between requests)."""

    def __init__(self, body: Iterable[bytes], tenant: Tenant | None, on_done: Callable[[], None]):
        self._body = body
        self._iterator: Iterator[bytes] | None = None
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
            return next(self._iterator)
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
