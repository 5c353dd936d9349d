"""otel_crm: the OpenTelemetry distro for multi-tenant SaaS backends.

Run your app under ``opentelemetry-instrument`` and otel_crm sets itself up; call
:func:`configure` yourself only where the wrapper cannot be used.
"""

from __future__ import annotations

from otel_crm._internal.integrations.asgi import TenantASGIMiddleware
from otel_crm._internal.integrations.wsgi import TenantWSGIMiddleware
from otel_crm._internal.lifecycle import configure, shutdown
from otel_crm._internal.settings import Settings, SettingsError
from otel_crm._internal.tenancy import Tenant, current_tenant, tenant_context
from otel_crm.helpers import (
    agent_invocation,
    connector_operation,
    instrument_connector_operation,
    instrument_sync_operation,
    journey_milestone,
    search_query,
    step,
    workflow,
)

__version__ = "0.1.0"

__all__ = [
    "Settings",
    "SettingsError",
    "Tenant",
    "TenantASGIMiddleware",
    "TenantWSGIMiddleware",
    "__version__",
    "agent_invocation",
    "configure",
    "connector_operation",
    "current_tenant",
    "instrument_connector_operation",
    "instrument_sync_operation",
    "journey_milestone",
    "search_query",
    "shutdown",
    "step",
    "tenant_context",
    "workflow",
]
