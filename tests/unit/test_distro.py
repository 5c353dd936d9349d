"""opentelemetry-instrument must pick otel_crm, also with upstream opentelemetry-distro beside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import distribution, entry_points
from pathlib import Path

from otel_crm._internal.settings import distro_defaults
from otel_crm.distro import ENV_DEFAULTS, CrmDistro

BIN = Path(sys.executable).parent
PROBE = ("import json, os; from otel_crm._internal import lifecycle; "
         "from opentelemetry import trace; "
         "print(json.dumps({'configured': lifecycle.is_configured(), "
         "'provider': type(trace.get_tracer_provider()).__name__, "
         "'semconv': os.environ.get('OTEL_SEMCONV_STABILITY_OPT_IN')}))")


def _instrumented(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    base.update({"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
                 "OTEL_LOGS_EXPORTER": "none", "OTEL_CRM_LOG_FORMAT": "none", **env})
    result = subprocess.run([str(BIN / "opentelemetry-instrument"), sys.executable, "-c", PROBE], env=base,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_upstream_distro_is_installed_beside_ours() -> None:
    names = {ep.name for ep in entry_points(group="opentelemetry_distro")}
    assert {"otel_crm", "distro"} <= names
    assert {"otel_crm", "configurator"} <= {ep.name for ep in entry_points(group="opentelemetry_configurator")}


def test_opentelemetry_instrument_picks_otel_crm_with_no_flags() -> None:
    out = _instrumented()
    # otel_crm's own provider (the SDK's with the cheaper span path, fast_tracer.py)
    assert out == {"configured": True, "provider": "FastTracerProvider", "semconv": "http,database"}


def test_the_selection_is_pinned_by_a_pth_default_not_by_discovery_order() -> None:
    files = [str(f) for f in distribution("otel-crm").files or []]
    assert "otel_crm_select.pth" in files
    assert os.environ.get("OTEL_PYTHON_DISTRO") == "otel_crm"
    assert os.environ.get("OTEL_PYTHON_CONFIGURATOR") == "otel_crm"


def test_a_user_choice_of_distro_still_wins() -> None:
    out = _instrumented(OTEL_PYTHON_DISTRO="distro", OTEL_PYTHON_CONFIGURATOR="configurator")
    assert out["configured"] is False


def test_user_set_semconv_opt_in_is_kept() -> None:
    assert _instrumented(OTEL_SEMCONV_STABILITY_OPT_IN="http/dup")["semconv"] == "http/dup"


def test_distro_sets_only_defaults(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    for key in ENV_DEFAULTS:
        if key != "OTEL_TRACES_EXPORTER":
            monkeypatch.delenv(key, raising=False)
    CrmDistro()._configure()
    assert os.environ["OTEL_TRACES_EXPORTER"] == "console"
    assert os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] == "http,database"


def test_distro_defaults_are_the_registry_defaults_plus_the_log_instrumentation_switch() -> None:
    assert {**distro_defaults(), "OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION": "false"} == ENV_DEFAULTS


def test_sqlalchemy_gets_a_provider_that_records_the_registry_pool_metric() -> None:
    import sqlalchemy  # already imported: the instrumentation loads at once (deferral: the test below)

    from otel_crm._internal.corrections import CorrectingMeterProvider

    assert sqlalchemy.__name__ in sys.modules

    seen: dict[str, object] = {}

    class EntryPoint:
        name = "sqlalchemy"

        def load(self) -> object:
            class Instrumentor:
                def instrument(self, **kwargs: object) -> None:
                    seen.update(kwargs)

            return Instrumentor

    CrmDistro().load_instrumentor(EntryPoint())
    assert isinstance(seen["meter_provider"], CorrectingMeterProvider)


_DEFERRAL = r"""
import json, sys
from otel_crm.distro import CrmDistro

seen = []

class EntryPoint:
    def __init__(self, name):
        self.name = name

    def load(self):
        name = self.name

        class Instrumentor:
            def instrument(self, **kwargs):
                seen.append((name, sorted(kwargs), "sqlalchemy" in sys.modules))

        return Instrumentor

for name in ("sqlalchemy", "requests", "logging"):
    CrmDistro().load_instrumentor(EntryPoint(name), skip_dep_check=True)
before = list(seen)
import sqlalchemy
print(json.dumps({"before": before, "after": seen, "requests": "requests" in sys.modules}))
"""


def test_library_instrumentations_load_when_the_app_imports_the_library() -> None:
    """SQLAlchemy's instrumentation imports SQLAlchemy: it waits for the app's own import (a fresh
    interpreter, where nothing imported it yet), then loads with the same arguments as before."""
    result = subprocess.run([sys.executable, "-c", _DEFERRAL], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")})
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # `logging` is not deferred; requests is never imported here, so its instrumentation never loads.
    assert found["before"] == [["logging", ["skip_dep_check"], False]]
    assert found["after"] == [["logging", ["skip_dep_check"], False],
                              ["sqlalchemy", ["meter_provider", "skip_dep_check"], True]]
    assert found["requests"] is False
