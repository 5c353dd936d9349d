"""The stdout a developer sees from the examples under the real `opentelemetry-instrument` (no
collector): one access line per request, no ANSI escapes, the framework's 404 warning carrying
the request's correlation_id; and an app's own logging.basicConfig() taking effect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import django_app, flask_app, instrumented_env
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent


def _json_lines(output: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _no_ansi(output: str) -> None:
    assert "\x1b" not in output and "\\u001b" not in output, output


def test_flask_dev_server_one_access_line_per_request_and_no_ansi(tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(None, "flask-logs"))
    assert requests.get(app.url("/no-such-page"), timeout=10).status_code == 404
    assert requests.get(app.url("/health"), timeout=10).status_code == 200
    app.process.stop()
    output = app.process.output()
    _no_ansi(output)
    assert "HTTP/1.1\" 404" not in output and "HTTP/1.1\" 200" not in output, output  # werkzeug's line
    lines = _json_lines(output)
    assert len([line for line in lines if line.get("path") == "/no-such-page"]) == 1
    # werkzeug's own startup lines still pass (they were coloured: now plain).
    assert any(line["logger"] == "werkzeug" and "Running on" in line["message"] for line in lines), output


def test_django_404_warning_carries_the_requests_correlation_id(tmp_path: Path) -> None:
    app = django_app(tmp_path, instrumented_env(None, "django-logs", OTEL_CRM_SAMPLING_MODE="off"))
    assert requests.get(app.url("/no-such-page"), timeout=10).status_code == 404
    app.process.stop()
    output = app.process.output()
    _no_ansi(output)
    lines = _json_lines(output)
    access = [line for line in lines if line.get("path") == "/no-such-page"]
    assert len(access) == 1, output
    assert not any(line["logger"] == "django.server" and "/no-such-page" in line["message"] for line in lines)
    warning = next(line for line in lines if line["message"] == "Not Found: /no-such-page")
    assert warning["logger"] == "django.request" and warning["level"] == "warning"
    assert warning["correlation_id"] == access[0]["correlation_id"]


APP = """
import logging
logging.basicConfig(level=logging.DEBUG, format="APP %(levelname)s %(name)s: %(message)s")
logging.getLogger("app").debug("debug line password=hunter2")
logging.getLogger("app").info("info line")
"""


def test_an_apps_basic_config_shapes_its_stdout_under_the_wrapper(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = {"PATH": str(VENV_BIN), "OTEL_SERVICE_NAME": "basic-config",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    done = subprocess.run([str(VENV_BIN / "opentelemetry-instrument"), sys.executable, str(script)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["APP DEBUG app: debug line password=[REDACTED:secret]", "APP INFO app: info line"], lines
    assert done.stderr == ""
