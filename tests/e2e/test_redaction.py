"""Redaction: credentials and e-mail addresses never reach Jaeger (collector-side second line of defence),
with the single-node config (otelcol.yaml) and with the scale-out sampler (gateway/sampler.yaml)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import CONFIGS, CollectorProc, JaegerProc, poll
from tests.e2e.traces import emit_trace, make_provider, tags

pytestmark = pytest.mark.e2e

SECRET = "Bearer s3cr3t-t0k3n"
EMAIL = "jane.doe@example.com"


# The single-node config and the scale-out tier's sampler (the one that redacts there: the load
# balancer only routes) must redact alike.
@pytest.fixture(scope="module", params=["otelcol.yaml", "gateway/sampler.yaml"])
def collector(request: pytest.FixtureRequest, jaeger: JaegerProc,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProc]:
    log_dir: Path = tmp_path_factory.mktemp("redaction")
    proc = CollectorProc(log_dir, CONFIGS / request.param, extra_env={
        "JAEGER_OTLP_ENDPOINT": jaeger.otlp_endpoint, "OTELCOL_DECISION_WAIT": "1s", "OTELCOL_BATCH_TIMEOUT": "200ms",
    }).start()
    yield proc
    proc.stop()


def test_authorization_cookies_and_emails_are_removed_or_masked(collector: CollectorProc, jaeger: JaegerProc) -> None:
    service = f"crm-e2e-redaction-{random.getrandbits(32):08x}"
    provider = make_provider(service, collector.grpc_endpoint)
    tid, _ = emit_trace(provider.get_tracer("e2e"), error=True, attributes={
        "authorization": SECRET,
        "http.request.header.authorization": [SECRET],
        "http.request.header.cookie": ["session=abc123"],
        "http.response.header.set-cookie": ["session=abc123; HttpOnly"],
        "crm.note": f"call back {EMAIL} tomorrow",
        "user.email": EMAIL,
        "db.password": "hunter2",
        "crm.deal.stage": "negotiation",
        "http.route": "/api/deals",
    })
    assert provider.force_flush(10_000)
    provider.shutdown()

    jt = poll(lambda: jaeger.trace(tid), 30, f"trace {tid:032x} in Jaeger")
    root = next(s for s in jt["spans"] if s["operationName"] == "POST /api/deals")
    got = tags(root)
    dump = json.dumps(jt)
    for key in ("authorization", "http.request.header.authorization", "http.request.header.cookie",
                "http.response.header.set-cookie"):
        assert key not in got, f"{key} reached Jaeger: {got.get(key)!r}"
    assert SECRET not in dump and "s3cr3t" not in dump and "session=abc123" not in dump
    assert "hunter2" not in dump and got["db.password"] == "****"
    assert EMAIL not in dump and "@example.com" not in dump
    assert got["user.email"] == "****"
    assert "****" in got["crm.note"]
    # everything else is untouched
    assert got["crm.deal.stage"] == "negotiation" and got["http.route"] == "/api/deals"


# otel_crm's own agent span, exported by a real process with in-process scrubbing OFF, so the
# collector's redaction is the only thing between the attributes and Jaeger.
AGENT_SCRIPT = """
import otel_crm
from opentelemetry import trace
from otel_crm.helpers import agent_invocation

# ratio 1.0 in tail mode: every trace kept, and the collector keeps it too (crm.sampling.mode=tail).
otel_crm.configure(sampling_mode="tail", sampling_ratio=1.0, scrub_mode="off", log_format="none",
                   metrics_exporter=["none"], logs_exporter=["none"])
with agent_invocation("openai", "gpt-4o", agent_name="researcher", operation="chat") as call:
    call.record_usage(812, 95, response_model="gpt-4o-2024-08-06")
    span = trace.get_current_span()
    span.set_attribute("auth_token", "Bearer s3cr3t-t0k3n")
    span.set_attribute("http.request.header.x-auth-token", ["s3cr3t-t0k3n"])
    span.set_attribute("crm.note", "retried with Bearer s3cr3t-t0k3n")
    print(format(span.get_span_context().trace_id, "032x"))
otel_crm.shutdown()
"""


def test_genai_token_counts_and_cost_survive_while_real_tokens_are_masked(
        collector: CollectorProc, jaeger: JaegerProc) -> None:
    import subprocess
    import sys

    from otel_crm._internal import semconv

    service = f"crm-e2e-genai-{random.getrandbits(32):08x}"
    env = {"PATH": "/usr/bin:/bin", "OTEL_SERVICE_NAME": service,
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{collector.grpc_endpoint}", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    done = subprocess.run([sys.executable, "-c", AGENT_SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    trace_id = int(done.stdout.strip().splitlines()[-1], 16)

    jt = poll(lambda: jaeger.trace(trace_id), 30, f"agent trace {trace_id:032x} in Jaeger")
    (span,) = jt["spans"]
    assert span["operationName"] == "chat gpt-4o"
    got = tags(span)
    assert got[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 812
    assert got[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 95
    assert got[semconv.CRM_GEN_AI_COST_CURRENCY] == "USD"
    assert isinstance(got[semconv.CRM_GEN_AI_COST_AMOUNT], float) and got[semconv.CRM_GEN_AI_COST_AMOUNT] > 0
    assert got[semconv.GEN_AI_REQUEST_MODEL] == "gpt-4o"
    # Real tokens: masked by key (auth_token, x-auth-token) and by value (a bearer token in free text).
    assert "s3cr3t" not in json.dumps(jt)
    assert got["auth_token"] == "****"
    assert "****" in got["crm.note"] and got["crm.note"].startswith("retried with ")
