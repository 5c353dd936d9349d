"""`opentelemetry-instrument` entry point (group `opentelemetry_distro`): environment defaults and
per-instrumentation options. Telemetry itself is set up by :mod:`otel_crm.configurator`."""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import metrics
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

from otel_crm._internal.corrections import CorrectingMeterProvider
from otel_crm._internal.deferred import when_imported
from otel_crm._internal.integrations.flask_hooks import install_flask_hooks
from otel_crm._internal.integrations.sqlalchemy_fast import install_sqlalchemy_fast_path
from otel_crm._internal.propagation import httpx_request_hook, requests_request_hook
from otel_crm._internal.runtime import current_runtime
from otel_crm._internal.settings import distro_defaults

__all__ = ["ENV_DEFAULTS", "CrmDistro"]

# Defaults only: a value the user set always wins. From the settings registry (exporters, the
# stable HTTP/DB conventions: seconds, http.route, db.system.name), plus one for another library:
ENV_DEFAULTS = {
    **distro_defaults(),
    # otel_crm attaches its own OTLP log handler (scrubbed, tenant-aware); the logging
    # instrumentation would attach a second one and every record would be exported twice.
    "OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION": "false",
}


_CORRECTED_METERS = frozenset({"sqlalchemy", "flask", "django"})

# Instrumentations loaded when the app imports their library, not at startup: loading one imports
# the library (SQLAlchemy alone is ~0.15 s of CPU), which an app that never uses it need not pay.
# Each of these patches attributes of the library's modules (wrapt wrappers, flask.Flask), which
# the post-import hook does before the app's import statement returns, so nothing is missed.
# Django is not deferred: its instrumentation reads (or configures) Django's settings when it
# instruments, and doing that later than upstream does would change what it finds.
_DEFERRED_INSTRUMENTATIONS = {"sqlalchemy": "sqlalchemy", "requests": "requests", "httpx": "httpx",
                              "flask": "flask"}


class CrmDistro(BaseDistro):  # type: ignore[misc]
    def _configure(self, **kwargs: Any) -> None:
        for key, value in ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        if entry_point.name == "requests":
            kwargs.setdefault("request_hook", requests_request_hook)
        elif entry_point.name == "httpx":
            kwargs.setdefault("request_hook", httpx_request_hook)
        elif entry_point.name in _CORRECTED_METERS:
            # SQLAlchemy's pool metric is the deprecated db.client.connections.usage: record the
            # registry's db.client.connection.count instead (docs/semconv.md). The up-down counters
            # these record on every request (pool count, http.server.active_requests) are summed in
            # process, reported when a reader collects (_internal/local_sums.py).
            kwargs.setdefault("meter_provider", CorrectingMeterProvider(metrics.get_meter_provider()))
        library = _DEFERRED_INSTRUMENTATIONS.get(entry_point.name)
        if library is None:
            super().load_instrumentor(entry_point, **kwargs)
            return
        # At once when the library is already imported (when_imported runs the hook then).
        when_imported(library, f"instrument_{entry_point.name}", lambda: self._load(entry_point, **kwargs))

    def _load(self, entry_point: Any, **kwargs: Any) -> None:
        fast = current_runtime().settings.fast_spans  # OTEL_CRM_FAST_SPANS=false: upstream's own code
        if entry_point.name == "sqlalchemy" and fast:
            # The same spans for less work per statement, connect and pool event (before any engine
            # is traced); upstream's own path if its code is not the expected one.
            install_sqlalchemy_fast_path()
        elif entry_point.name == "flask" and fast:
            install_flask_hooks()  # cheaper per-request hooks, same telemetry (before any app exists)
        super().load_instrumentor(entry_point, **kwargs)
