"""`opentelemetry-instrument` entry point (group `opentelemetry_configurator`).

Runs after the distro and before the instrumentations: it calls :func:`otel_crm.configure` and
opens tenant contexts around Flask and Django apps.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import Any

from otel_crm._internal.integrations.frameworks import patch_frameworks
from otel_crm._internal.lifecycle import configure
from otel_crm._internal.safety import guard
from otel_crm._internal.sdk_compat import BaseConfigurator
from otel_crm._internal.settings import SettingsError

__all__ = ["CrmConfigurator"]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class _SkippedConfiguratorFilter(logging.Filter):
    """Upstream warns about every other configurator it skipped; once ours won, that is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("Configuration of %s not loaded")
                    and "otel_crm" in tuple(map(str, record.args or ())))


class CrmConfigurator(BaseConfigurator):
    def _configure(self, **kwargs: Any) -> None:
        logging.getLogger("opentelemetry.instrumentation.auto_instrumentation._load").addFilter(
            _SkippedConfiguratorFilter())
        try:
            runtime = configure()
        except SettingsError as exc:
            # opentelemetry-instrument swallows exceptions from configurators and starts the app
            # anyway; strict mode means "do not run with bad settings", so stop the process here.
            # (SystemExit would surface as a "Fatal Python error" from site.py, so exit directly.)
            sys.stderr.write(f"otel_crm: OTEL_CRM_STRICT=true and the settings are invalid, not starting: "
                             f"{exc}\n")
            sys.stderr.flush()
            os._exit(2)
        if runtime.settings.disabled:
            return
        with guard("patch_frameworks"):
            patch_frameworks(runtime.settings, _installed)
