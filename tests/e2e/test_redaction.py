"""Redaction: credentials and e-mail addresses never reach Jaeger (collector-side second line of defence)."""

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


@pytest.fixture(scope="module")
def collector(jaeger: JaegerProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProc]:
    log_dir: Path = tmp_path_factory.mktemp("redaction")
    proc = CollectorProc(log_dir, CONFIGS / "otelcol.yaml", extra_env={
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
