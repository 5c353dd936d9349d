"""The one-line startup summary: what this process will do with its telemetry, safe to print.

    otel_crm: service=crm-api environment=development profile=development endpoint=http://127.0.0.1:4317
    protocol=grpc sampling=tail ratio=1 tenant=header:X-Tenant-ID scrubbing=redact

Printed when `startup_report` is on (the development profile's default, else
OTEL_CRM_STARTUP_REPORT=true). Nothing in it is a secret: the endpoint loses its user info, query
and fragment; headers, salts and tenant ids are never shown; every value is one printable token.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from otel_crm._internal.settings import Settings

__all__ = ["sanitized_endpoint", "startup_summary", "tenant_source"]

_UNPRINTABLE = re.compile(r"[^\x21-\x7e]+")


def _token(value: object) -> str:
    """One space-free, printable token (a service name may hold anything)."""
    text = _UNPRINTABLE.sub("_", str(value))[:120]
    return text or "-"


def sanitized_endpoint(endpoint: str) -> str:
    """scheme://host:port/path of an endpoint: no user info, query or fragment (they carry credentials)."""
    if not endpoint:
        return ""
    try:
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
    except ValueError:  # a malformed port: show nothing rather than the raw text
        return "<invalid endpoint>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) if parts.scheme else netloc + parts.path


def tenant_source(settings: Settings) -> str:
    """Where a request's tenant comes from, in precedence order (never the tenant id itself)."""
    sources = []
    if settings.tenant_header:
        sources.append(f"header:{settings.tenant_header}")
    if settings.tenant_resolver:
        sources.append(f"resolver:{settings.tenant_resolver}")
    if settings.trust_incoming_baggage:
        sources.append("baggage")
    if settings.tenant_id:
        sources.append("resource")
    return ",".join(sources) or "none"


def _sampling(settings: Settings) -> str:
    mode = settings.sampling_mode
    if mode in ("tail", "head"):
        return f"sampling={mode} ratio={settings.sampling_ratio:g}"
    return f"sampling={mode}"


def startup_summary(settings: Settings) -> str:
    """The summary line for these settings (the caller decides whether to print it)."""
    if settings.disabled:
        return f"otel_crm: disabled service={_token(settings.service_name)}"
    otlp_signals = [s for s in ("traces", "metrics", "logs") if "otlp" in getattr(settings, f"{s}_exporter")]
    endpoint = sanitized_endpoint(settings.endpoint_for(otlp_signals[0])) if otlp_signals else "none"
    fields = [
        f"service={_token(settings.service_name)}",
        f"environment={_token(settings.environment)}",
        f"profile={settings.profile}",
        f"endpoint={_token(endpoint)}",
        f"protocol={settings.otlp_protocol}",
        _sampling(settings),
        f"tenant={_token(tenant_source(settings))}",
        f"scrubbing={settings.scrub_mode}",
    ]
    return "otel_crm: " + " ".join(fields)
