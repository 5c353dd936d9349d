"""otel_crm: the OpenTelemetry distro for multi-tenant SaaS backends.

Run your app under ``opentelemetry-instrument`` and otel_crm sets itself up; call
:func:`configure` yourself only where the wrapper cannot be used.
"""

from __future__ import annotations

from otel_crm._internal.config import configure, shutdown
from otel_crm._internal.settings import Settings, SettingsError
from otel_crm._internal.tenancy import Tenant, current_tenant, tenant_context

__version__ = "0.1.0"

__all__ = [
    "Settings",
    "SettingsError",
    "Tenant",
    "__version__",
    "configure",
    "current_tenant",
    "shutdown",
    "tenant_context",
]
