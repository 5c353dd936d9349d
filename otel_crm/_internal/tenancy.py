"""Tenant context: who the work is for, carried in the OpenTelemetry context and W3C baggage.

The context value is the source of truth inside a process (it follows asyncio tasks and thread
pools that copy context); baggage carries it to downstream services. Spans started inside a tenant
context get `crm.tenant.id` from :class:`TenantSpanProcessor`; metrics get it through
:class:`TenantLabeler`, the cardinality guard.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from opentelemetry import baggage, context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otel_crm._internal import semconv
from otel_crm._internal.cardinality import OTHER, CardinalityGuard
from otel_crm._internal.generators import decorate_async_generator, decorate_generator
from otel_crm._internal.memo import Memo
from otel_crm._internal.safety import guard

__all__ = [
    "BAGGAGE_TENANT_ID",
    "BAGGAGE_TENANT_TIER",
    "BAGGAGE_USER_ID",
    "MAX_TENANT_ID_LENGTH",
    "OTHER_TENANT",
    "Tenant",
    "TenantForm",
    "TenantLabeler",
    "TenantSpanProcessor",
    "clean_tenant_id",
    "current_tenant",
    "tenant_context",
    "tenant_form",
    "tenant_from_baggage",
]

BAGGAGE_TENANT_ID = semconv.BAGGAGE_TENANT_ID
BAGGAGE_TENANT_TIER = semconv.BAGGAGE_TENANT_TIER
BAGGAGE_USER_ID = semconv.BAGGAGE_USER_ID
OTHER_TENANT = OTHER
MAX_TENANT_ID_LENGTH = 128
_TENANT_KEY = context.create_key("otel_crm.tenant")
_CRM_TENANT_ID, _get_current = semconv.CRM_TENANT_ID, context.get_current
_F = TypeVar("_F", bound=Callable[..., Any])
# Tokens of the tenant contexts entered with `with`, per contextvars.Context (thread / task): one
# tenant_context object may be entered concurrently by several threads or tasks, and a token must
# be detached in the context that created it.
_entered: contextvars.ContextVar[tuple[tuple[int, object], ...]] = contextvars.ContextVar(
    "otel_crm_tenant_tokens", default=())


def clean_tenant_id(value: object) -> str | None:
    """A tenant or user id fit for telemetry: printable, trimmed, at most 128 characters.

    Returns None for None, empty or all-unprintable values. Ids arrive from request headers and
    baggage, i.e. from callers: never let them put control characters or megabytes into logs.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable() or len(text) > MAX_TENANT_ID_LENGTH:
        text = "".join(ch for ch in text[:4 * MAX_TENANT_ID_LENGTH] if ch.isprintable())
    text = text.strip()[:MAX_TENANT_ID_LENGTH].strip()
    return text or None


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    user_id: str | None = None
    tier: str | None = None


def current_tenant(ctx: Context | None = None) -> Tenant | None:
    """The tenant of the current (or given) context, or None outside any tenant context."""
    value = (context.get_current() if ctx is None else ctx).get(_TENANT_KEY)  # context.get_value, one call less
    return value if isinstance(value, Tenant) else None


def tenant_from_baggage(ctx: Context | None = None) -> Tenant | None:
    """A tenant carried in incoming W3C baggage (trust it only when the settings say so).

    Values are cleaned like header values: baggage comes from the caller.
    """
    tenant_id = clean_tenant_id(baggage.get_baggage(BAGGAGE_TENANT_ID, ctx))
    if tenant_id is None:
        return None
    return Tenant(tenant_id, clean_tenant_id(baggage.get_baggage(BAGGAGE_USER_ID, ctx)),
                  clean_tenant_id(baggage.get_baggage(BAGGAGE_TENANT_TIER, ctx)))


def context_with_tenant(tenant: Tenant, ctx: Context | None = None) -> Context:
    """A context holding `tenant` as the context value and as baggage for downstream services."""
    if ctx is None:
        ctx = context.get_current()
    if ctx:
        return _with_tenant(tenant, ctx)
    # An empty context (a request's start, an extraction without trace headers: twice per request)
    # gives the same immutable result for equal tenants: built once per tenant, then shared.
    built = _empty_with_tenant.get(tenant)
    if built is None:
        built = _empty_with_tenant.put(tenant, _with_tenant(tenant, ctx))
    return built


def _with_tenant(tenant: Tenant, ctx: Context) -> Context:
    ctx = context.set_value(_TENANT_KEY, tenant, ctx)
    ctx = baggage.set_baggage(BAGGAGE_TENANT_ID, tenant.id, ctx)
    for key, value in ((BAGGAGE_USER_ID, tenant.user_id), (BAGGAGE_TENANT_TIER, tenant.tier)):
        if value:
            ctx = baggage.set_baggage(key, value, ctx)
        elif baggage.get_baggage(key, ctx) is not None:  # a nested tenant must not inherit these
            ctx = baggage.remove_baggage(key, ctx)
    return ctx


_empty_with_tenant: Memo[Tenant, Context] = Memo(1024)  # bounded: start again when full


class tenant_context:
    """Run code on behalf of a tenant: ``with tenant_context("acme", user_id="u1"):``.

    Also a decorator for sync and async functions and generators (the tenant is current only while
    the generator runs, not while its consumer does). Nesting replaces the tenant for the inner block.
    Ids are cleaned (printable, at most 128 characters); a None or empty tenant id makes the block
    run with no tenant change at all (``__enter__`` returns None) rather than raise in the request.
    One object may be entered by several threads or tasks at once.
    """

    __slots__ = ("_tenant",)

    def __init__(self, tenant_id: str | None, *, user_id: str | None = None, tier: str | None = None):
        cleaned = clean_tenant_id(tenant_id)
        self._tenant = (Tenant(cleaned, clean_tenant_id(user_id), clean_tenant_id(tier))
                        if cleaned is not None else None)

    @property
    def tenant(self) -> Tenant | None:
        return self._tenant

    def __enter__(self) -> Tenant | None:
        if self._tenant is None:
            return None
        token = context.attach(context_with_tenant(self._tenant))
        _entered.set((*_entered.get(), (id(self), token)))
        return self._tenant

    def __exit__(self, *exc_info: object) -> None:
        if self._tenant is None:
            return
        stack = _entered.get()
        for index in range(len(stack) - 1, -1, -1):
            if stack[index][0] == id(self):
                token = stack[index][1]
                _entered.set(stack[:index] + stack[index + 1:])
                context.detach(token)  # type: ignore[arg-type]
                return

    async def __aenter__(self) -> Tenant | None:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)

    def __call__(self, function: _F) -> _F:
        tenant = self._tenant
        if tenant is None:
            return function
        if inspect.isgeneratorfunction(function):
            return decorate_generator(function, lambda args: _TenantSteps(tenant))
        if inspect.isasyncgenfunction(function):
            return decorate_async_generator(function, lambda args: _TenantSteps(tenant))
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = context.attach(context_with_tenant(tenant))
                try:
                    return await function(*args, **kwargs)
                finally:
                    context.detach(token)

            return cast(_F, async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = context.attach(context_with_tenant(tenant))
            try:
                return function(*args, **kwargs)
            finally:
                context.detach(token)

        return cast(_F, wrapper)


class _TenantSteps:
    """The tenant is current only while a decorated generator runs, not while its consumer does."""

    __slots__ = ("_tenant",)

    def __init__(self, tenant: Tenant):
        self._tenant = tenant

    def start(self) -> Context:
        return context_with_tenant(self._tenant)

    def enter(self) -> None:
        return None

    def leave(self) -> None:
        return None

    def item(self, value: object) -> None:
        return None

    def done(self, exc: BaseException | None) -> None:
        return None


class TenantSpanProcessor(SpanProcessor):
    """Puts the tenant of the span's parent context on every span as it starts, in its outgoing
    form (:class:`TenantForm`)."""

    def __init__(self, *, capture_user_id: bool = False, form: TenantForm | None = None):
        self._capture_user_id = capture_user_id
        self._form = form or _PLAIN
        # The last tenant seen and its outgoing form: a request's spans share one Tenant object, so
        # most spans skip the form cache's key tuple. One tuple, replaced whole (threads share it).
        self._last: tuple[Tenant | None, str] = (None, "")

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # Runs for every span: no generator-based context manager on the hot path; `guard` only
        # sees the (never expected) exception.
        try:
            tenant = (parent_context if parent_context is not None else _get_current()).get(_TENANT_KEY)
            if tenant is None:
                return
            last = self._last
            if last[0] is tenant:  # most spans: the previous span's tenant, one attribute (set below)
                span.set_attribute(_CRM_TENANT_ID, last[1])
                return
            if not isinstance(tenant, Tenant):
                return
            if tenant.tier is None and (tenant.user_id is None or not self._capture_user_id):
                form = self._form(tenant.id)
                self._last = (tenant, form)  # only a tenant whose whole output is this one attribute
                span.set_attribute(_CRM_TENANT_ID, form)
                return
            attributes = {semconv.CRM_TENANT_ID: self._form(tenant.id)}
            if tenant.tier:
                attributes[semconv.CRM_TENANT_TIER] = tenant.tier
            if self._capture_user_id and tenant.user_id:
                attributes[semconv.USER_ID] = self._form(tenant.user_id, semconv.USER_ID)
            span.set_attributes(attributes)
        except Exception:
            with guard("tenancy"):
                raise

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class TenantLabeler(CardinalityGuard):
    """A cardinality guard of `crm.tenant.id` alone (the runtime's guard covers every attribute).

    Allow-listed tenants always keep their name; otherwise the first `limit` distinct tenants seen
    per metric keep theirs and the rest are recorded as ``__other__``, each overflow counted.
    """

    def __init__(self, limit: int, allowlist: Iterable[str] = (),
                 on_overflow: Callable[[str], None] | None = None):
        report = (lambda metric, _attribute: on_overflow(metric)) if on_overflow is not None else None
        super().__init__({semconv.CRM_TENANT_ID: limit}, {semconv.CRM_TENANT_ID: allowlist}, report)

    def label(self, metric: str, tenant_id: str | None) -> str | None:
        return None if tenant_id is None else self.bound(metric, semconv.CRM_TENANT_ID, tenant_id)


class TenantForm:
    """The one outgoing form of a tenant (or user) id: the same on spans, log records, metric labels
    and JSON lines. The scrubber's verdict for the `crm.tenant.id` key (an id cut to the maximum
    length: redacted whole), cached per id (the hot path)."""

    _CACHE_MAX = 4096

    def __init__(self, scrubber: Any = None):
        self._scrubber = scrubber
        self._cache: dict[tuple[str, str], str] = {}

    def __call__(self, tenant_id: str, key: str = semconv.CRM_TENANT_ID) -> str:
        cached = self._cache.get((key, tenant_id))
        if cached is not None:
            return cached
        form = tenant_id
        if self._scrubber is not None and len(tenant_id) >= MAX_TENANT_ID_LENGTH:
            # Cut by clean_tenant_id: what was cut may have been the part that made a secret
            # recognisable (a JWT's signature), so the rest is not sent at all.
            form = "[REDACTED:tenant-too-long]"
        elif self._scrubber is not None:
            with guard("tenancy"):
                form = "[REDACTED]"  # fail closed
                form = str(self._scrubber.scrub_value(key, tenant_id))
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[(key, tenant_id)] = form
        return form


_forms: weakref.WeakKeyDictionary[Any, TenantForm] = weakref.WeakKeyDictionary()
_forms_lock = threading.Lock()
_PLAIN = TenantForm()


def tenant_form(scrubber: Any) -> TenantForm:
    """The :class:`TenantForm` of `scrubber` (one per scrubber, so one cache per runtime)."""
    if scrubber is None:
        return _PLAIN
    form = _forms.get(scrubber)
    if form is None:
        with _forms_lock:
            form = _forms.setdefault(scrubber, TenantForm(scrubber))
    return form
