"""Every standard OTEL_* variable otel_crm checks, set to a bad value under the real
`opentelemetry-instrument` running the Flask example: the app starts and serves, exactly one line
names each variable, telemetry still reaches the real collector; strict mode refuses to start.

Variables are tried in groups (one app start per group; each variable's own line is checked)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import VENV_BIN, Collector, flask_app, instrumented_env, wait_until
from tests.support.bad_values import bad_standard_values
from tests.support.processes import ROOT, ManagedProcess, free_port

pytestmark = pytest.mark.integration

BAD = bad_standard_values()
GROUPS = 4
# The fixture's own export settings are replaced by their bad values in the group that holds them.
_NAMES = sorted(BAD)
_GROUPS = [_NAMES[index::GROUPS] for index in range(GROUPS)]


def lines_naming(output: str, variable: str) -> list[str]:
    name = re.compile(rf"(?<![A-Z_]){re.escape(variable)}(?![A-Z_])")
    return [line for line in output.splitlines() if name.search(line)]


def test_every_standard_variable_has_a_bad_value_to_try() -> None:
    for expected in ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_PROPAGATORS",
                     "OTEL_BLRP_MAX_QUEUE_SIZE", "OTEL_METRIC_EXPORT_TIMEOUT", "OTEL_TRACES_SAMPLER",
                     "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"):
        assert expected in BAD
    assert len(BAD) >= 70 and sum(map(len, _GROUPS)) == len(BAD)


@pytest.mark.parametrize("group", range(GROUPS))
def test_bad_values_are_one_line_each_and_the_app_is_unaffected(collector: Collector, tmp_path: Path,
                                                                 group: int) -> None:
    bad = {name: BAD[name] for name in _GROUPS[group]}
    env = instrumented_env(collector, f"flask-bad-{group}", OTEL_CRM_SAMPLING_MODE="off", **bad)
    app = flask_app(tmp_path, env)
    for _ in range(3):
        response = requests.get(app.url("/leads"), timeout=10)
        assert response.status_code == 200, response.text[:500]
    app.process.stop()
    output = app.process.output()
    for variable, value in bad.items():
        found = lines_naming(output, variable)
        assert len(found) == 1, f"{variable}: {found or output[-3000:]}"
        # a malformed mapping may hold a secret anywhere: never echoed
        shown = "'****'" if variable.endswith(("_HEADERS", "_RESOURCE_ATTRIBUTES")) else repr(value)
        assert f"{variable}={shown}" in found[0]
    assert "Traceback" not in output, output[-3000:]
    wait_until(lambda: any(s.name == "GET /leads" and s.resource.get("service.name") == f"flask-bad-{group}"
                           for s in collector.spans()), 20, "the request's span in the collector")
    wait_until(lambda: any(r.resource.get("service.name") == f"flask-bad-{group}" for r in collector.logs()),
               20, "the app's log records in the collector")


def test_strict_mode_refuses_to_start_with_the_line(tmp_path: Path) -> None:
    bad = {name: BAD[name] for name in ("OTEL_PROPAGATORS", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
                                        "OTEL_BLRP_MAX_QUEUE_SIZE", "OTEL_PYTHON_FLASK_EXCLUDED_URLS")}
    env = {**instrumented_env(None, "flask-strict", **bad), "OTEL_CRM_STRICT": "true", "CRM_PORT": str(free_port())}
    process = ManagedProcess("strict", [str(VENV_BIN / "opentelemetry-instrument"), sys.executable,
                                        str(ROOT / "examples" / "flask_crm" / "app.py")], env=env, log_dir=tmp_path)
    try:
        assert process.proc.wait(60) == 2
    finally:
        process.stop()
    output = process.output()
    (line,) = [line for line in output.splitlines() if "not starting" in line]
    for variable, value in bad.items():
        assert f"{variable}={value!r}" in line


# --- OTEL_PROPAGATORS and OTEL_TRACES_SAMPLER honoured ----------------------------------------------


def test_b3_propagation_end_to_end_with_the_tenant_on_top(collector: Collector, tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.propagators.b3")
    app = flask_app(tmp_path, instrumented_env(collector, "flask-b3", OTEL_CRM_SAMPLING_MODE="off",
                                               OTEL_PROPAGATORS="b3"))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {"b3": f"{trace_id}-{parent_id}-1", "X-Tenant-ID": "acme",
               # W3C headers are not read when only b3 is configured:
               "traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}
    assert requests.get(app.url("/leads"), headers=headers, timeout=10).status_code == 200
    app.process.stop()
    assert "OTEL_PROPAGATORS" not in app.process.output()

    def server_span():  # type: ignore[no-untyped-def]
        return next((s for s in collector.spans() if s.name == "GET /leads"
                     and s.resource.get("service.name") == "flask-b3"), None)

    wait_until(lambda: server_span() is not None, 20, "the b3-parented server span in the collector")
    span = server_span()
    assert (span.trace_id, span.parent_span_id) == (trace_id, parent_id)
    assert span.attributes["crm.tenant.id"] == "acme"


def test_otel_traces_sampler_in_head_mode_and_the_line_in_tail_mode(collector: Collector, tmp_path: Path) -> None:
    head = flask_app(tmp_path, instrumented_env(collector, "flask-head-off", OTEL_CRM_SAMPLING_MODE="head",
                                                OTEL_TRACES_SAMPLER="always_off"), name="head")
    tail = flask_app(tmp_path, instrumented_env(collector, "flask-tail", OTEL_CRM_SAMPLING_MODE="tail",
                                                OTEL_CRM_SAMPLING_RATIO="1", OTEL_TRACES_SAMPLER="always_off"),
                     name="tail")
    for app in (head, tail):
        for _ in range(5):
            assert requests.get(app.url("/leads"), timeout=10).status_code == 200
        app.process.stop()
    assert not lines_naming(head.process.output(), "OTEL_TRACES_SAMPLER")
    (line,) = lines_naming(tail.process.output(), "OTEL_TRACES_SAMPLER")
    assert "OTEL_CRM_SAMPLING_MODE=tail decides" in line

    def requests_counted() -> float:
        return max((p.value or 0 for p in collector.metrics() if p.metric == "crm.requests"
                    and p.resource.get("service.name") == "flask-head-off"), default=0)

    wait_until(lambda: requests_counted() >= 5, 20, "head mode's RED metrics for every request")
    wait_until(lambda: len([s for s in collector.spans() if s.resource.get("service.name") == "flask-tail"
                            and s.name == "GET /leads"]) == 5, 20,
               "the tail-mode app's request spans (its ratio 1, not always_off, decided)")
    assert not [s for s in collector.spans() if s.resource.get("service.name") == "flask-head-off"
                and s.name == "GET /leads"], "always_off in head mode: no request span exported"
