"""configure() with nothing listening on the collector endpoint: the process exits within 1 s of
its last statement and adds at most one line (what it dropped, counted), for both protocols."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.support.processes import ROOT, free_port

pytestmark = pytest.mark.integration

SCRIPT = """
import logging, sys, time
import otel_crm
otel_crm.configure(service_name="x")
from opentelemetry import trace
with trace.get_tracer("t").start_as_current_span("work"):
    logging.getLogger("app").warning("app line")
sys.stderr.write(f"END {time.time()}\\n")
"""


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_exit_within_a_second_with_one_line(protocol: str) -> None:
    port = free_port()  # nothing listens there: connections are refused
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
           "OTEL_CRM_SAMPLING_MODE": "off"}  # keep the span: it must be dropped at exit, counted
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    exited = time.time()
    assert done.returncode == 0, done.stderr
    end = [line for line in done.stderr.splitlines() if line.startswith("END ")]
    assert len(done.stderr.splitlines()) == 1 and end, done.stderr  # no SDK noise on stderr
    assert exited - float(end[0].split()[1]) < 1.0
    lines = done.stdout.splitlines()
    assert '"app line"' in lines[0] and len(lines) == 2, lines
    assert f"no collector at 127.0.0.1:{port} at exit; dropped 1 traces, 1 logs" in lines[1]
    assert "counted in crm.telemetry.dropped" in lines[1]
