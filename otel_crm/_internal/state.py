"""The running configuration: settings plus the providers and shared guards built from them.

`configure()` installs one Runtime; helpers and processors read it through :func:`current`.
`otel_crm.testing` swaps in a runtime backed by in-memory exporters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry import metrics, trace

from otel_crm._internal.settings import Settings, resolve_settings
from otel_crm._internal.tenancy import TenantLabeler

__all__ = ["Runtime", "current", "install", "uninstall"]

_T = TypeVar("_T")
_lock = threading.Lock()
_runtime: Runtime | None = None


@dataclass(eq=False)
class Runtime:
    settings: Settings
    tracer_provider: Any = None  # SDK TracerProvider, or None to use the global one
    meter_provider: Any = None
    logger_provider: Any = None
    tenant_labeler: TenantLabeler | None = None
    scrubber: Any = None  # scrubbing.Scrubber | None
    extras: dict[str, Any] = field(default_factory=dict)  # owned objects to shut down
    _cache: dict[str, Any] = field(default_factory=dict)

    def tracer(self, name: str = "otel_crm") -> trace.Tracer:
        provider = self.tracer_provider or trace.get_tracer_provider()
        return provider.get_tracer(name)

    def meter(self, name: str = "otel_crm") -> metrics.Meter:
        provider = self.meter_provider or metrics.get_meter_provider()
        return provider.get_meter(name)

    def cached(self, key: str, factory: Callable[[], _T]) -> _T:
        """Instruments and other per-runtime singletons, built once."""
        try:
            return self._cache[key]  # type: ignore[no-any-return]
        except KeyError:
            with _lock:
                if key not in self._cache:
                    self._cache[key] = factory()
                return self._cache[key]  # type: ignore[no-any-return]

    def tenant_label(self, metric: str, tenant_id: str | None) -> str | None:
        if tenant_id is None or self.tenant_labeler is None:
            return tenant_id
        return self.tenant_labeler.label(metric, tenant_id)


def current() -> Runtime:
    """The installed runtime; before `configure()`, one built from the environment alone."""
    global _runtime
    runtime = _runtime
    if runtime is None:
        with _lock:
            if _runtime is None:
                settings = resolve_settings()
                _runtime = Runtime(settings=settings,
                                   tenant_labeler=TenantLabeler(settings.tenant_metric_limit,
                                                                settings.tenant_allowlist))
            runtime = _runtime
    return runtime


def install(runtime: Runtime) -> Runtime | None:
    """Make `runtime` current; returns the one it replaces."""
    global _runtime
    with _lock:
        previous, _runtime = _runtime, runtime
    return previous


def uninstall() -> None:
    global _runtime
    with _lock:
        _runtime = None
