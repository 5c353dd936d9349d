"""Context propagation: W3C trace context + baggage, with the tenant added to outgoing baggage
only for allowed hosts. Tenant and user ids must never reach third-party APIs.

The requests/httpx request hooks see the URL before the instrumentation injects headers; they
mark the outgoing call as blocked in a context variable that :class:`CrmBaggagePropagator`
reads at inject time.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import propagate
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

from otel_crm._internal.settings import Settings
from otel_crm._internal.tenancy import context_with_tenant, current_tenant

__all__ = ["CrmBaggagePropagator", "host_allowed", "install_propagator", "outgoing_request"]

_blocked: contextvars.ContextVar[bool] = contextvars.ContextVar("otel_crm_baggage_blocked",
                                                                default=False)
_allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1")


def host_allowed(host: str | None, allowed: Iterable[str] | None = None) -> bool:
    """`allowed` entries match exactly, or as a domain suffix when they start with a dot."""
    if not host:
        return False
    host = host.lower().rstrip(".")
    for entry in _allowed_hosts if allowed is None else allowed:
        entry = entry.lower()
        if host == entry or (entry.startswith(".") and (host.endswith(entry) or host == entry[1:])):
            return True
    return False


def outgoing_request(url: str) -> None:
    """Called by client request hooks: decide whether this call may carry baggage."""
    _blocked.set(not host_allowed(urlsplit(url).hostname))


class CrmBaggagePropagator(TextMapPropagator):
    def __init__(self) -> None:
        self._w3c = W3CBaggagePropagator()

    def extract(self, carrier: CarrierT, context: Context | None = None,
                getter: Getter[CarrierT] = default_getter) -> Context:
        return self._w3c.extract(carrier, context, getter)

    def inject(self, carrier: CarrierT, context: Context | None = None,
               setter: Setter[CarrierT] = default_setter) -> None:
        if _blocked.get():
            _blocked.set(False)
            return
        tenant = current_tenant(context)
        if tenant is not None:
            context = context_with_tenant(tenant, context)
        self._w3c.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        return self._w3c.fields


def install_propagator(settings: Settings) -> None:
    global _allowed_hosts
    _allowed_hosts = tuple(settings.baggage_allowed_hosts)
    propagate.set_global_textmap(CompositePropagator(
        [TraceContextTextMapPropagator(), CrmBaggagePropagator()]))


def requests_request_hook(span: Any, request: Any) -> None:
    url = getattr(request, "url", None)
    if url:
        outgoing_request(str(url))


def httpx_request_hook(span: Any, request: Any) -> None:
    url = getattr(request, "url", None)
    if url is not None:
        outgoing_request(str(url))
