"""Secrets in our own output: `otel-crm doctor` and the startup warnings of a process under the real
`opentelemetry-instrument` never print a secret setting, however malformed — a header written
``name: value``, credentials in the endpoint URL, an Authorization header, a credential-looking
resource attribute. The real CLI and the real wrapper, as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.processes import ROOT, free_port

pytestmark = pytest.mark.integration

VENV_BIN = os.path.dirname(sys.executable)
SCRIPT = ("import logging, opentelemetry.trace as t\n"
          "with t.get_tracer('probe').start_as_current_span('probe'): logging.getLogger('app').warning('hello')\n")

# (variables, the secret that must not appear, what must appear instead: the warning or the masked value)
CASES = [
    ({"OTEL_EXPORTER_OTLP_HEADERS": "x-team: S3CRET-team-1"}, "S3CRET-team-1", "invalid OTEL_EXPORTER_OTLP_HEADERS"),
    ({"OTEL_EXPORTER_OTLP_HEADERS": "Authorization: Bearer S3CRET-bearer-2"}, "S3CRET-bearer-2",
     "invalid OTEL_EXPORTER_OTLP_HEADERS"),
    ({"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20S3CRET-bearer-3,x-ok=1"}, "S3CRET-bearer-3", "****"),
    ({"OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=S3CRET-key-4,broken"}, "S3CRET-key-4",
     "invalid OTEL_EXPORTER_OTLP_HEADERS"),
    ({"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-api-key: S3CRET-key-5"}, "S3CRET-key-5", ""),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://u:S3CRET-pw-6@127.0.0.1:{port}"}, "S3CRET-pw-6", "127.0.0.1"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "u:S3CRET-pw-7@127.0.0.1:{port}"}, "S3CRET-pw-7", ""),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://u:S3CRET-pw-8@[127.0.0.1:{port}"}, "S3CRET-pw-8", ""),
    ({"OTEL_RESOURCE_ATTRIBUTES": "api_token=S3CRET-res-9,team=crm"}, "S3CRET-res-9", "team"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "team=crm,session S3CRET-res-10"}, "S3CRET-res-10",
     "invalid OTEL_RESOURCE_ATTRIBUTES"),
    ({"OTEL_CRM_SCRUB_SALT": "S3CRET-salt-11"}, "S3CRET-salt-11", "****"),
]


def _env(variables: dict[str, str], port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"OTEL_SERVICE_NAME": "settings-probe", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "OTEL_CRM_SHUTDOWN_TIMEOUT_SECONDS": "1", "OTEL_CRM_STARTUP_REPORT": "true"})
    env.update({k: v.replace("{port}", str(port)) for k, v in variables.items()})
    return env


@pytest.mark.parametrize(("variables", "secret", "shown"), CASES, ids=[c[1] for c in CASES])
def test_doctor_never_prints_a_secret(variables: dict[str, str], secret: str, shown: str) -> None:
    result = subprocess.run([os.path.join(VENV_BIN, "otel-crm"), "doctor"], env=_env(variables, free_port()),
                            capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    output = result.stdout + result.stderr
    assert "otel_crm doctor" in output
    assert secret not in output, output
    assert shown in output, output


@pytest.mark.parametrize(("variables", "secret", "shown"), CASES, ids=[c[1] for c in CASES])
def test_startup_and_export_warnings_never_print_a_secret(variables: dict[str, str], secret: str,
                                                          shown: str) -> None:
    """A span and a log record exported to an endpoint that refuses: the startup summary, the
    settings warnings, the SDK's header warnings and the export failures are all printed."""
    result = subprocess.run([os.path.join(VENV_BIN, "opentelemetry-instrument"), sys.executable, "-c", SCRIPT],
                            env=_env(variables, free_port()), capture_output=True, text=True, timeout=60, cwd=ROOT,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "hello" in output  # the app ran, its log line was printed
    assert secret not in output, output
    if shown.startswith("invalid"):
        assert shown in output, output
