"""`opentelemetry-instrument` entry point (group `opentelemetry_configurator`).

Runs after the distro and before the instrumentations: it calls :func:`otel_crm.configure` and
opens tenant contexts around Flask and Django apps.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from opentelemetry.sdk._configuration import _BaseConfigurator

__all__ = ["CrmConfigurator"]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class CrmConfigurator(_BaseConfigurator):  # type: ignore[misc]
    def _configure(self, **kwargs: Any) -> None:
        from otel_crm._internal.config import configure
        from otel_crm._internal.safety import guard
        from otel_crm._internal.web import patch_frameworks

        runtime = configure()
        if runtime.settings.disabled:
            return
        with guard("patch_frameworks"):
            patch_frameworks(runtime.settings, _installed)
