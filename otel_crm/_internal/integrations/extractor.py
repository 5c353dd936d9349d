"""Which tenant a request is for: a header, a resolver function, or — only when trusted —
incoming W3C baggage, in that order; all are cleaned (printable, at most 128 characters).

A resolver is the user's code: when it raises, the request goes on without a tenant and the
failure is logged once and counted (`otel_crm.internal.errors`, component `tenant_resolver`).

This lives with the integrations, not in `tenancy.py`: it reads the WSGI environ and builds the
framework's request object for the resolver, while `tenancy.py` knows nothing about HTTP.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from opentelemetry.baggage.propagation import W3CBaggagePropagator

from otel_crm._internal.runtime import current_runtime
from otel_crm._internal.safety import report_internal_error
from otel_crm._internal.settings import Settings
from otel_crm._internal.tenancy import Tenant, clean_tenant_id, tenant_from_baggage

__all__ = ["TenantExtractor", "default_extractor", "environ_key"]


def environ_key(header: str) -> str:
    """The WSGI environ key of an HTTP header: `X-Tenant-ID` → `HTTP_X_TENANT_ID`."""
    return "HTTP_" + header.upper().replace("-", "_")


class TenantExtractor:
    """Reads the tenant (and user) of a request from its WSGI environ, as the settings say.

    `request_factory` builds the framework's request from the environ for a resolver (Flask's
    `Request`, Django's `WSGIRequest`); without one the resolver gets the environ itself.
    """

    def __init__(self, settings: Settings, request_factory: Callable[[dict[str, Any]], Any] | None = None):
        self._tenant_key = environ_key(settings.tenant_header) if settings.tenant_header else None
        self._user_key = environ_key(settings.user_header) if settings.user_header else None
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
        tenant_id = clean_tenant_id(environ.get(self._tenant_key)) if self._tenant_key else None
        user_id = clean_tenant_id(environ.get(self._user_key)) if self._user_key else None
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
        return clean_tenant_id(resolved) if resolved else None


def default_extractor() -> TenantExtractor:
    """For a middleware built without one: the settings of the running otel_crm (or, before
    configure(), of the environment)."""
    return TenantExtractor(current_runtime().settings)
