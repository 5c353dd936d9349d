"""Work deferred to the app's own import: run then (or at once), never breaking the import; and,
under the real `opentelemetry-instrument`, a Flask app's startup imports neither Django nor
SQLAlchemy nor requests, while each is still patched and instrumented when the app imports it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from otel_crm._internal.deferred import when_imported

BIN = Path(sys.executable).parent


def _python(code: str, *argv: str, instrument: bool = False, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    base.update(env)
    command = [sys.executable, "-c", code, *argv]
    if instrument:
        command.insert(0, str(BIN / "opentelemetry-instrument"))
    result = subprocess.run(command, env=base, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_runs_at_once_when_the_module_is_already_imported() -> None:
    ran: list[str] = []
    when_imported("json", "test_deferred", lambda: ran.append("json"))
    assert ran == ["json"]


_WAITS = r"""
import json, sys
from otel_crm._internal.deferred import when_imported

ran = []
when_imported("colorsys", "test_deferred", lambda: ran.append(("colorsys", "colorsys" in sys.modules)))
when_imported("colorsys", "test_deferred", lambda: 1 / 0)  # reported, not raised into the import
when_imported("colorsys", "test_deferred", lambda: ran.append(("second", True)))
before = list(ran)
import colorsys
from otel_crm._internal import safety
print(json.dumps({"before": before, "after": ran, "reported": [list(key) for key in safety._seen]}))
"""


def test_waits_for_the_import_and_an_error_never_reaches_the_importer() -> None:
    found = _python(_WAITS)
    assert found["before"] == []
    assert found["after"] == [["colorsys", True], ["second", True]]  # in registration order, after one failed
    assert found["reported"] == [["test_deferred", "ZeroDivisionError"]]  # logged once and counted


_FLASK_APP = r"""
import json, sys

import flask

app = flask.Flask("startup")
app.add_url_rule("/ok", "ok", lambda: "ok")
assert app.test_client().get("/ok").status_code == 200
# What a Flask app's startup imported: never SQLAlchemy or requests; Django only through Django's
# own instrumentation (upstream's, which imports Django when it instruments).
imported = sorted(name for name in ("django", "sqlalchemy", "requests") if name in sys.modules)

from opentelemetry.instrumentation.flask import FlaskInstrumentor

flask_ok = FlaskInstrumentor().is_instrumented_by_opentelemetry and flask.Flask.__name__ == "_InstrumentedFlask"
flask_patched = getattr(flask.Flask.__call__, "_otel_crm_patched", False)

from sqlalchemy import create_engine  # imported by the app after startup

from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

sqlalchemy_ok = SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry and hasattr(create_engine, "__wrapped__")

import requests

from opentelemetry.instrumentation.requests import RequestsInstrumentor

requests_ok = RequestsInstrumentor().is_instrumented_by_opentelemetry

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.db.backends.signals import connection_created

django_patched = [getattr(WSGIHandler.__call__, "_otel_crm_patched", False),
                  getattr(ASGIHandler.__call__, "_otel_crm_patched", False),
                  any(receiver[0][0] == "otel_crm.django_db" for receiver in connection_created.receivers)]
print(json.dumps({"imported": imported, "flask": [flask_ok, flask_patched], "sqlalchemy": sqlalchemy_ok,
                  "requests": requests_ok, "django": django_patched}))
"""

_QUIET = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
          "OTEL_CRM_LOG_FORMAT": "none", "OTEL_PYTHON_DISTRO": "otel_crm", "OTEL_PYTHON_CONFIGURATOR": "otel_crm"}


def test_a_flask_app_pays_for_no_other_library_and_each_is_patched_when_imported() -> None:
    found = _python(_FLASK_APP, instrument=True, **_QUIET)
    assert found["imported"] == ["django"]  # the Django instrumentation (eager, as upstream) imports it
    assert found == {**found, "flask": [True, True], "sqlalchemy": True, "requests": True,
                     "django": [True, True, True]}


def test_django_imported_after_startup_is_patched() -> None:
    """Without the Django instrumentation nothing imports Django at startup: otel_crm's tenant
    patch and query spans wait for the app's import, and are there when it comes."""
    found = _python(_FLASK_APP, instrument=True, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="django", **_QUIET)
    assert found["imported"] == []
    assert found["django"] == [True, True, True]
    assert found["flask"] == [True, True] and found["sqlalchemy"] and found["requests"]
