"""The trace id in the response and which traces were kept, end to end: the Flask example under the
real `opentelemetry-instrument`, tail sampling in process, the real collector.

A support ticket quotes the `traceresponse` header: its trace id is the access line's
`correlation_id`, the access line says `trace_sampled`, and a kept trace is at the collector."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests

from tests.conftest import Collector, flask_app, instrumented_env, wait_until

pytestmark = pytest.mark.integration

# /health dropped (even on error), everything else kept: one kept and one dropped trace, deterministic.
RULES = json.dumps([{"name": "health", "route": "/health", "ratio": 0, "errors": False, "slow": False}])
TRACERESPONSE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


def _access_line(output: str, path: str) -> dict[str, object]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    # The last one: the harness polls /health until the app is up.
    return [line for line in lines if line.get("logger") == "otel_crm.access" and line.get("path") == path][-1]


def test_the_header_leads_to_the_access_line_and_the_kept_trace(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "traceresponse-crm", OTEL_CRM_SAMPLING_MODE="tail",
                                               OTEL_CRM_SAMPLING_RATIO="1", OTEL_CRM_SAMPLING_RULES=RULES))
    kept = requests.get(app.url("/ok"), timeout=10)
    dropped = requests.get(app.url("/health"), timeout=10)
    assert kept.status_code == dropped.status_code == 200
    kept_match = TRACERESPONSE.match(kept.headers["traceresponse"])
    dropped_match = TRACERESPONSE.match(dropped.headers["traceresponse"])
    assert kept_match and dropped_match, (kept.headers, dropped.headers)
    assert kept.headers["Server-Timing"] == f'traceparent;desc="{kept.headers["traceresponse"]}"'
    kept_trace, kept_span = kept_match.groups()
    dropped_trace = dropped_match.group(1)

    wait_until(lambda: any(s.trace_id == kept_trace for s in collector.spans()), 20,
               "the kept trace at the collector")
    app.process.stop()
    output = app.process.output()
    kept_line, dropped_line = _access_line(output, "/ok"), _access_line(output, "/health")
    assert kept_line["correlation_id"] == kept_trace and kept_line["trace_sampled"] is True
    assert dropped_line["correlation_id"] == dropped_trace and dropped_line["trace_sampled"] is False

    server = next(s for s in collector.spans() if s.trace_id == kept_trace and s.parent_span_id == "")
    assert server.span_id == kept_span, "the header names the server span"
    assert server.name == "GET /ok"
    # Shutdown flushed everything: the dropped trace never reached the collector.
    assert not any(s.trace_id == dropped_trace for s in collector.spans())


def test_the_headers_can_be_switched_off(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "traceresponse-off",
                                               OTEL_CRM_TRACE_RESPONSE_HEADER="false"))
    response = requests.get(app.url("/ok"), timeout=10)
    app.process.stop()
    assert response.status_code == 200
    assert "traceresponse" not in response.headers and "Server-Timing" not in response.headers
    assert len(str(_access_line(app.process.output(), "/ok")["correlation_id"])) == 32
