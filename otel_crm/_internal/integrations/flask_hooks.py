"""Cheaper per-request hooks for opentelemetry-instrumentation-flask, with the same telemetry.

``_InstrumentedFlask.__init__`` and ``instrument_app`` build an app's three per-request hooks (WSGI
wrapper, ``before_request``, ``teardown_request``) with module factories looked up at app creation.
:func:`install_flask_hooks` replaces the factories with these, which take upstream's steps in order:

- No excluded URLs (an empty ``ExcludeList``: ``url_disabled`` is always false): ``request.url``,
  which werkzeug rebuilds and quotes, is not built to ask it. With excluded URLs, upstream's checks.
- ``collect_request_attributes`` (twice per request): once, partly memoised (request_attributes.py).
- Custom header capture skipped when otel_crm's settings configure no header (upstream re-reads
  three variables per request to find none); the request resolved once per hook, not ~10 proxy reads.

Applied only to the instrumentation version these were checked against (:data:`CHECKED_VERSIONS`)
with the functions found as expected; otherwise upstream's hooks stay and one warning says so. The
differential test (tests/unit/test_integrations_flask_hooks.py) runs the same requests through both.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Mapping
from time import time_ns
from timeit import default_timer
from types import ModuleType
from typing import Any, cast

from opentelemetry import context as context_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import _Span
from opentelemetry.trace.propagation import _SPAN_KEY

from otel_crm._internal.fast_span import FastSpan
from otel_crm._internal.integrations.request_attributes import RequestAttributes
from otel_crm._internal.runtime import current_runtime
from otel_crm._internal.safety import guard
from otel_crm._internal.semconv import HTTP_ROUTE

__all__ = ["CHECKED_VERSIONS", "install_flask_hooks", "uninstall_flask_hooks"]

CHECKED_VERSIONS = frozenset({"0.66b1"})
_FACTORIES = {  # what each replaced factory takes (apps call them by these names)
    "_rewrapped_app": ["wsgi_app", "active_requests_counter", "duration_histogram_old", "response_hook",
                       "excluded_urls", "sem_conv_opt_in_mode", "duration_histogram_new"],
    "_wrapped_before_request": ["request_hook", "tracer", "excluded_urls", "enable_commenter", "commenter_options",
                                "sem_conv_opt_in_mode"], "_wrapped_teardown_request": ["excluded_urls"]}
_log = logging.getLogger("otel_crm")
_SDK_SPANS = (_Span, FastSpan)  # spans whose set_attribute is the SDK's insert (FastSpan's: the same)
_PLAIN = frozenset({int, float, bool})
_originals: dict[str, Any] = {}
_attach, _detach, _set_value = context_api.attach, context_api.detach, context_api.set_value
_warned: list[str] = []


def _never_excluded(excluded_urls: Any) -> bool:
    """An ``ExcludeList`` of nothing: its ``url_disabled`` is false for every URL, so asking it (and
    building ``request.url`` to ask) changes nothing."""
    from opentelemetry.util.http import ExcludeList

    return type(excluded_urls) is ExcludeList and not excluded_urls._excluded_urls


def _set_again(span: Any, attributes: Mapping[str, Any]) -> None:
    """Upstream's second pass over the request attributes, after the span started (its processors
    and the request hook may have set attributes since): each key is set again, so it moves to the
    end, with the request's value. When the span is the SDK's (or otel_crm's), every key is still
    held and every value is one the SDK stores as is, the same moves are made on its attribute dict
    under its locks: nine calls through the span's checks become one pass. Else upstream's calls."""
    stored = getattr(span, "_attributes", None)
    if type(span) in _SDK_SPANS and type(stored) is BoundedAttributes:
        held: dict[str, Any] = stored._dict
        limit = stored.max_value_len
        for key, value in attributes.items():
            kind = type(value)
            if key not in held or not (kind in _PLAIN or (kind is str and (limit is None or len(value) <= limit))):
                break
        else:
            with span._lock:
                if span._end_time is None:
                    with stored._lock:
                        for key, value in attributes.items():
                            del held[key]
                            held[key] = value
                    return
    for key, value in attributes.items():
        span.set_attribute(key, value)


class _Activation:
    """``trace.use_span(span, end_on_exit=True)`` as the hooks use it (entered in ``before_request``,
    exited in ``teardown_request``) without its generator: on a clean exit the same two steps (the
    context detached, the span ended). On an exception, upstream's own ``use_span`` takes over, so the
    exception event (its stack trace, which shows that generator's frame) and the status are its."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Any) -> None:
        self._span = span
        self._token: Any = None

    def __enter__(self) -> Any:
        self._token = _attach(_set_value(_SPAN_KEY, self._span))
        return self._span

    def __exit__(self, typ: Any, value: Any, traceback: Any) -> bool | None:
        if typ is None and value is None:
            try:
                _detach(self._token)
            finally:
                self._span.end()
            return False
        from opentelemetry import trace

        _detach(self._token)
        upstream = trace.use_span(self._span, end_on_exit=True)
        upstream.__enter__()  # the same context again, detached by upstream's own exit
        return upstream.__exit__(typ, value, traceback)


def _filter(allowed: Any) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    keys = frozenset(allowed)
    return lambda attributes: {key: value for key, value in attributes.items() if key in keys}


def _hooks(fl: ModuleType) -> dict[str, Callable[..., Any]]:
    """The three factories, bound to the instrumentation module `fl` (its environ keys, logger)."""
    import flask
    from opentelemetry import context, trace
    from opentelemetry.instrumentation import _semconv as semconv
    from opentelemetry.instrumentation import wsgi
    from opentelemetry.instrumentation.propagators import get_global_response_propagator
    from opentelemetry.instrumentation.utils import _start_internal_or_server_span
    from opentelemetry.util.http import sanitize_method

    starttime_key, span_key, token_key = fl._ENVIRON_STARTTIME_KEY, fl._ENVIRON_SPAN_KEY, fl._ENVIRON_TOKEN
    activation_key, reqctx_ref_key = fl._ENVIRON_ACTIVATION_KEY, fl._ENVIRON_REQCTX_REF_KEY
    request_ctx_ref, flask_31_plus, logger = fl._request_ctx_ref, fl._IS_FLASK_31_PLUS, fl._logger
    server, default_mode, http_target = trace.SpanKind.SERVER, semconv._StabilityMode.DEFAULT, fl.HTTP_TARGET
    current_request = cast(Any, flask.request)._get_current_object
    response_propagator: Any = get_global_response_propagator
    start_span: Any = _start_internal_or_server_span
    collectors: dict[Any, RequestAttributes] = {}

    def collector(mode: Any) -> RequestAttributes:
        return collectors.get(mode) or collectors.setdefault(mode, RequestAttributes(mode))

    def capture(field: str) -> bool:
        with guard("flask_hooks"):  # on a failure (never expected), upstream's per-request check
            return bool(getattr(current_runtime().settings, field))
        return True

    def rewrapped_app(wsgi_app: Any, active_requests_counter: Any, duration_histogram_old: Any = None,  # noqa: PLR0917
                      response_hook: Any = None, excluded_urls: Any = None, sem_conv_opt_in_mode: Any = default_mode,
                      duration_histogram_new: Any = None) -> Callable[..., Any]:
        mode = sem_conv_opt_in_mode
        excluded = None if _never_excluded(excluded_urls) else excluded_urls
        collect, capture_response = collector(mode), capture("capture_server_response_headers")
        active_attrs = _active_filter(semconv, mode)
        old_duration = _filter(semconv._server_duration_attrs_old)
        new_duration = _filter(semconv._server_duration_attrs_new)

        def _wrapped_app(wrapped_app_environ: Any, start_response: Callable[..., Any]) -> Any:
            wrapped_app_environ[starttime_key] = time_ns()
            start = default_timer()
            attributes = collect(wrapped_app_environ)
            active_requests_count_attrs = active_attrs(attributes)
            active_requests_counter.add(1, active_requests_count_attrs)
            request_route = None
            should_trace = True

            def _start_response(status: str, response_headers: Any, *args: Any, **kwargs: Any) -> Any:
                nonlocal should_trace, request_route
                try:
                    request = current_request()
                except RuntimeError:  # no request context: upstream's `bool(flask.request)` is false
                    request = None
                should_trace = request is not None and (excluded is None or not excluded.url_disabled(request.url))
                if should_trace:
                    request_route = request.url_rule
                    span = request.environ.get(span_key)
                    propagator = response_propagator()
                    if propagator:
                        propagator.inject(response_headers, setter=wsgi.default_response_propagation_setter)
                    if span:
                        wsgi.add_response_attributes(span, status, response_headers, attributes, mode)
                        if capture_response and span.is_recording() and span.kind == server:
                            custom_attributes = wsgi.collect_custom_response_headers_attributes(response_headers)
                            if len(custom_attributes) > 0:
                                span.set_attributes(custom_attributes)
                    else:
                        logger.warning("Flask environ's OpenTelemetry span missing at _start_response(%s)", status)
                    if response_hook is not None:
                        response_hook(span, status, response_headers)
                return start_response(status, response_headers, *args, **kwargs)

            try:
                result = wsgi_app(wrapped_app_environ, _start_response)
                if should_trace:
                    duration_s = default_timer() - start
                    metrics_context = trace.set_span_in_context(wrapped_app_environ.get(span_key))
                    if duration_histogram_old:
                        duration_attrs_old = old_duration(attributes)
                        if request_route:
                            duration_attrs_old[http_target] = str(request_route)
                        duration_histogram_old.record(max(round(duration_s * 1000), 0), duration_attrs_old,
                                                      context=metrics_context)
                    if duration_histogram_new:
                        duration_attrs_new = new_duration(attributes)
                        if request_route:
                            duration_attrs_new[HTTP_ROUTE] = str(request_route)
                        duration_histogram_new.record(max(duration_s, 0), duration_attrs_new, context=metrics_context)
                return result
            finally:
                active_requests_counter.add(-1, active_requests_count_attrs)

        return _wrapped_app

    def wrapped_before_request(request_hook: Any = None, tracer: Any = None, excluded_urls: Any = None,  # noqa: PLR0917
                               enable_commenter: bool = True, commenter_options: Any = None,
                               sem_conv_opt_in_mode: Any = default_mode) -> Callable[[], None]:
        mode = sem_conv_opt_in_mode
        excluded = None if _never_excluded(excluded_urls) else excluded_urls
        collect, capture_request = collector(mode), capture("capture_server_request_headers")
        framework = f"flask:{fl.flask_version}"

        def _before_request() -> None:
            request = current_request()
            if excluded and excluded.url_disabled(request.url):
                return
            flask_request_environ = request.environ
            attributes, method = collect.request(flask_request_environ)
            raw_method = flask_request_environ.get("REQUEST_METHOD", "")
            if raw_method != raw_method.strip():  # else `method` is sanitize_method(raw_method) already
                method = sanitize_method(raw_method.strip())
            if method == "_OTHER":
                method = "HTTP"
            url_rule = request.url_rule
            try:
                span_name = f"{method} {url_rule.rule}"  # type: ignore[union-attr, unused-ignore]
            except AttributeError:
                span_name = wsgi.get_default_span_name(flask_request_environ)
            if url_rule:  # none for a 404 with no route, etc.
                attributes[HTTP_ROUTE] = url_rule.rule
            span, token = start_span(
                tracer=tracer, span_name=span_name, start_time=flask_request_environ.get(starttime_key),
                context_carrier=flask_request_environ, context_getter=wsgi.wsgi_getter, attributes=attributes)
            if request_hook:
                request_hook(span, flask_request_environ)
            if span.is_recording():
                _set_again(span, attributes)
                if capture_request and span.is_recording() and span.kind == server:
                    custom_attributes = wsgi.collect_custom_request_headers_attributes(flask_request_environ)
                    if len(custom_attributes) > 0:
                        span.set_attributes(custom_attributes)
            activation = _Activation(span)  # trace.use_span(span, end_on_exit=True)
            activation.__enter__()
            flask_request_environ[activation_key] = activation
            flask_request_environ[reqctx_ref_key] = request_ctx_ref()
            flask_request_environ[span_key] = span
            flask_request_environ[token_key] = token
            if enable_commenter:
                current_context = context.get_current()
                flask_info = {}
                if commenter_options.get("framework", True):
                    flask_info["framework"] = framework
                if commenter_options.get("controller", True) and request.endpoint:
                    flask_info["controller"] = request.endpoint
                if commenter_options.get("route", True) and request.url_rule and request.url_rule.rule:
                    flask_info["route"] = request.url_rule.rule
                context.attach(context.set_value("SQLCOMMENTER_ORM_TAGS_AND_VALUES", flask_info, current_context))

        return _before_request

    def wrapped_teardown_request(excluded_urls: Any = None) -> Callable[[BaseException | None], None]:
        excluded = None if _never_excluded(excluded_urls) else excluded_urls

        def _teardown_request(exc: BaseException | None) -> None:
            request = current_request()
            if excluded and excluded.url_disabled(request.url):
                return
            environ = request.environ
            activation = environ.get(activation_key)
            token = environ.get(token_key)
            if not activation or environ.get(reqctx_ref_key) != request_ctx_ref():
                # No span started here (test_request_context runs no before_request), or a request
                # context pushed inside this request (copy_current_request_context): not ours to end.
                return
            try:
                is_streaming = False
                if flask_31_plus:  # upstream's check of a streamed response
                    with contextlib.suppress(RuntimeError, AttributeError):
                        response = getattr(request, "response", None)
                        is_streaming = bool(response and hasattr(response, "stream") and response.stream)
                if is_streaming:
                    try:
                        context.detach(token)
                        if hasattr(activation, "__exit__"):
                            activation.__exit__(None, None, None)
                        environ[activation_key] = None
                        environ[token_key] = None
                        logger.debug("Streaming response context cleanup completed in teardown function")
                    except (RuntimeError, ValueError, TypeError, AttributeError) as cleanup_exc:
                        logger.debug("Teardown streaming context cleanup failed: %s", cleanup_exc)
                    return
                if exc is None:
                    activation.__exit__(None, None, None)
                else:
                    activation.__exit__(type(exc), exc, getattr(exc, "__traceback__", None))
                if token:
                    context.detach(token)
                    environ.pop(activation_key, None)
                    environ.pop(token_key, None)
            except (RuntimeError, AttributeError, ValueError) as teardown_exc:
                logger.debug("Error during request teardown: %s", teardown_exc, exc_info=True)

        return _teardown_request

    return {"_rewrapped_app": rewrapped_app, "_wrapped_before_request": wrapped_before_request,
            "_wrapped_teardown_request": wrapped_teardown_request}


def _active_filter(semconv: Any, mode: Any) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """``_parse_active_request_count_attrs``: the old attributes, then the new ones (dup mode)."""
    old = _filter(semconv._server_active_requests_count_attrs_old) if semconv._report_old(mode) else None
    new = _filter(semconv._server_active_requests_count_attrs_new) if semconv._report_new(mode) else None
    if old is not None and new is not None:
        return lambda attributes: {**old(attributes), **new(attributes)}
    return old or new or (lambda attributes: {})


def _as_expected(fl: ModuleType) -> bool:
    from opentelemetry.instrumentation.flask.version import __version__

    for name, parameters in _FACTORIES.items():
        function = getattr(fl, name, None)
        if not callable(function) or list(inspect.signature(function).parameters) != parameters:
            return False
    return __version__ in CHECKED_VERSIONS and all(
        hasattr(fl, name) for name in ("_ENVIRON_STARTTIME_KEY", "_ENVIRON_SPAN_KEY", "_ENVIRON_ACTIVATION_KEY",
                                       "_ENVIRON_REQCTX_REF_KEY", "_ENVIRON_TOKEN", "_request_ctx_ref",
                                       "_IS_FLASK_31_PLUS", "_logger", "flask_version"))


def install_flask_hooks() -> bool:
    """Replace the Flask instrumentation's hook factories with the cheaper ones (apps created from
    now on use them); false, with one warning, when the installed instrumentation is not the one
    they were checked against. Never raises: the app keeps upstream's hooks on any error."""
    try:
        from opentelemetry.instrumentation import flask as fl

        if _originals:
            return True
        if not _as_expected(fl):
            if not _warned:
                _warned.append("flask")
                _log.warning("otel_crm: opentelemetry-instrumentation-flask is not the version otel_crm's "
                             "cheaper Flask hooks were checked against; its own hooks are used (slower)")
            return False
        hooks = _hooks(fl)
        _originals.update({name: getattr(fl, name) for name in hooks})
        for name, hook in hooks.items():
            setattr(fl, name, hook)
        return True
    except Exception as exc:  # reported; upstream's hooks stay
        from otel_crm._internal.safety import report_internal_error

        uninstall_flask_hooks()
        report_internal_error("flask_hooks", exc, raise_in_tests=False)
        return False


def uninstall_flask_hooks() -> None:
    """Put upstream's factories back (apps created from now on use them); for tests."""
    if not _originals:
        return
    from opentelemetry.instrumentation import flask as fl

    for name, original in _originals.items():
        setattr(fl, name, original)
    _originals.clear()
