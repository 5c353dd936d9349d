"""Context propagation: W3C trace context + baggage, with the tenant added to outgoing baggage
only for allowed hosts. Tenant and user ids must never reach third-party APIs.

Which host a call goes to is decided, at inject time, from (1) the requests/httpx request hooks,
which see the URL before the instrumentation injects headers and record their verdict in a
context variable, else (2) the current CLIENT span's `server.address` / `url.full` (urllib,
urllib3, aiohttp… set them before injecting). Calls with neither (gRPC, queues) keep baggage.

Incoming baggage keys of ours (`crm.tenant.id`, `crm.user.id`, `crm.tenant.tier`) are dropped on
extract unless incoming baggage is trusted: a caller must not be able to name a tenant for us,
nor for the services we call. The in-process tenant (opened around the request by the web
middleware, outside the server span) survives extraction, which starts from an empty context.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_crm._internal import fast_extract, semconv
from otel_crm._internal.settings import Settings
from otel_crm._internal.tenancy import (
    BAGGAGE_TENANT_ID,
    BAGGAGE_TENANT_TIER,
    BAGGAGE_USER_ID,
    context_with_tenant,
    current_tenant,
    tenant_from_baggage,
)

__all__ = ["CrmBaggagePropagator", "host_allowed", "install_propagator", "outgoing_request", "propagators_for"]

# The verdict of a client request hook for the call about to inject: True = blocked, False =
# allowed, None = no hook ran (decide from the client span).
_blocked: contextvars.ContextVar[bool | None] = contextvars.ContextVar("otel_crm_baggage_blocked",
                                                                       default=None)
_log = logging.getLogger("otel_crm")
_allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
_TENANT_KEYS = (BAGGAGE_TENANT_ID, BAGGAGE_USER_ID, BAGGAGE_TENANT_TIER)
_HOST_ATTRIBUTES = (semconv.SERVER_ADDRESS, semconv.NET_PEER_NAME, semconv.HTTP_HOST)
_URL_ATTRIBUTES = (semconv.URL_FULL, semconv.HTTP_URL)


def host_allowed(host: str | None, allowed: Iterable[str] | None = None) -> bool:
    """`allowed` entries match exactly, or as a domain suffix when they start with a dot."""
    if not host:
        return False
    host = host.lower().rstrip(".")
    for raw in _allowed_hosts if allowed is None else allowed:
        entry = raw.lower().strip()
        if host == entry or (entry.startswith(".") and (host.endswith(entry) or host == entry[1:])):
            return True
    return False


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def outgoing_request(url: str) -> None:
    """Called by client request hooks: decide whether this call may carry baggage."""
    _blocked.set(not host_allowed(_hostname(url)))


def _client_span_blocked(context: Context | None) -> bool:
    """Without a hook's verdict: block baggage when the current client span names a host that is
    not allowed. No client span or no host attribute (gRPC, queues): not an HTTP call, allow."""
    span = trace.get_current_span(context)
    attributes = getattr(span, "attributes", None)
    if not attributes or getattr(span, "kind", None) is not trace.SpanKind.CLIENT:
        return False
    for key in _HOST_ATTRIBUTES:
        host = attributes.get(key)
        if host:
            return not host_allowed(str(host))
    for key in _URL_ATTRIBUTES:
        url = attributes.get(key)
        if url:
            return not host_allowed(_hostname(str(url)))
    return False


class CrmBaggagePropagator(TextMapPropagator):
    """W3C baggage that carries the in-process tenant out (to allowed hosts only) and does not let
    callers set it (unless `trust_incoming` — then the web extractor reads it)."""

    def __init__(self, *, trust_incoming: bool = False, propagate: bool = True) -> None:
        self._w3c = W3CBaggagePropagator()
        self._trust_incoming = trust_incoming and propagate
        self._propagate = propagate  # False: OTEL_PROPAGATORS has no `baggage`, keep the tenant only

    def extract(self, carrier: CarrierT, context: Context | None = None,
                getter: Getter[CarrierT] = default_getter) -> Context:
        ambient = current_tenant()
        if self._propagate:
            result = self._w3c.extract(carrier, context, getter)
        else:
            result = context if context is not None else Context()
        if not self._trust_incoming:
            carried = baggage.get_all(result)  # most requests carry no baggage: one read
            if carried:
                for key in _TENANT_KEYS:
                    if carried.get(key) is not None:
                        result = baggage.remove_baggage(key, result)
        # Instrumentations extract into an empty Context and attach it for the request: keep the
        # tenant the middleware opened around it, or the server span and the logs lose it.
        # Composite propagators hand us the trace-context propagator's fresh Context: fall back
        # to the ambient (current) one.
        tenant = current_tenant(result) or ambient
        if tenant is None and self._trust_incoming:
            # No middleware ran (a queue consumer, a plain app): trusted baggage names it.
            tenant = tenant_from_baggage(result)
        if tenant is not None:
            result = context_with_tenant(tenant, result)
        return result

    def inject(self, carrier: CarrierT, context: Context | None = None,
               setter: Setter[CarrierT] = default_setter) -> None:
        if not self._propagate:
            return
        verdict = _blocked.get()
        if verdict is not None:
            _blocked.set(None)
        blocked = verdict if verdict is not None else _client_span_blocked(context)
        if blocked:
            return
        tenant = current_tenant(context)
        if tenant is not None:
            context = context_with_tenant(tenant, context)
        self._w3c.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        return self._w3c.fields if self._propagate else set()


def propagators_for(settings: Settings) -> list[TextMapPropagator]:
    """OTEL_PROPAGATORS in order (names checked by the settings: installed ones only), with W3C
    baggage replaced by ours. Without `baggage` ours still runs, propagating nothing, so the
    tenant opened around the request survives extraction."""
    chosen: list[TextMapPropagator] = []
    baggage_seen = False
    for name in settings.propagators:
        if name == "none":
            chosen = []
            break
        if name == "tracecontext":
            chosen.append(TraceContextTextMapPropagator())
        elif name == "baggage":
            baggage_seen = True
            chosen.append(CrmBaggagePropagator(trust_incoming=settings.trust_incoming_baggage))
        else:
            try:
                (entry,) = entry_points(group="opentelemetry_propagator", name=name)
                chosen.append(entry.load()())
            except Exception as exc:  # a broken package: left out, one line
                _log.warning("otel_crm: OTEL_PROPAGATORS: propagator %r failed to load (%r); left out", name, exc)
    if not baggage_seen or not chosen:
        chosen.append(CrmBaggagePropagator(trust_incoming=settings.trust_incoming_baggage, propagate=False))
    return chosen


def install_propagator(settings: Settings) -> None:
    global _allowed_hosts
    _allowed_hosts = tuple(settings.baggage_allowed_hosts)
    chosen = propagators_for(settings)
    composite = CompositePropagator(chosen)
    propagate.set_global_textmap(composite)
    # The web instrumentations' extraction, cheaper for the default propagators (same Context).
    fast_extract.install(composite, chosen, settings.fast_spans)


def requests_request_hook(span: Any, request: Any) -> None:
    url = getattr(request, "url", None)
    if url:
        outgoing_request(str(url))


def httpx_request_hook(span: Any, request: Any) -> None:
    url = getattr(request, "url", None)
    if url is not None:
        outgoing_request(str(url))
