"""Log injection against the real app: with OTEL_CRM_LOG_FORMAT=text, a path and a header holding
CR, LF and ESC (percent-encoded in the URL, decoded by the server) cannot forge a line on stdout —
each record stays on one line — and the secrets in them are scrubbed there too."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.conftest import Collector, flask_app, instrumented_env, wait_until

pytestmark = pytest.mark.integration

FORGED = "FORGED-LINE level=error"


def test_a_decoded_newline_cannot_forge_a_text_log_line(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "flask-crm", OTEL_CRM_LOG_FORMAT="text",
                                               CRM_TEST_ENDPOINTS="1"))
    path = "/inject%0A" + FORGED.replace(" ", "%20") + "%0D%0A%1B[31m" + FORGED.replace(" ", "%20")
    assert requests.get(app.url(path), timeout=10).status_code == 404
    note = f"one\n{FORGED}\r\n\x1b[2J{FORGED} jane.doe@example.com"
    assert requests.post(app.url("/privacy-probe"), json={"text": note}, timeout=10).status_code == 500
    wait_until(lambda: "probe note:" in app.process.output() and "/inject" in app.process.output(), 20,
               "the access line and the probe's log lines")
    app.process.stop()
    lines = app.process.output().splitlines()
    assert not [line for line in lines if line.startswith(("FORGED", "\x1b", "[2J", "[31m"))]
    injected = [line for line in lines if "FORGED-LINE" in line]
    assert injected, "the lines carrying the payload were written"
    assert all("\\n" in line or "\\r" in line or "%0A" in line for line in injected), injected
    assert "\x1b" not in app.process.output()
    assert "jane.doe@example.com" not in app.process.output()
