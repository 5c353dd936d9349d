"""`otel-crm traces` against the real Jaeger v2 (collector-config/jaeger.yaml): traces sent with the
plain SDK straight to Jaeger's OTLP port, then read back through the command line."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from tests.e2e.stack import JaegerProc, poll
from tests.e2e.traces import emit_trace, make_provider

CLI = Path(sys.executable).parent / "otel-crm"


def _cli(*args: str, jaeger: JaegerProc) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OTEL_CRM_JAEGER_URL": jaeger.api.removesuffix("/api")}  # the setting, not --jaeger
    return subprocess.run([str(CLI), "traces", *args], capture_output=True, text=True, timeout=60, env=env)


def test_list_filter_and_waterfall_against_the_real_jaeger(jaeger: JaegerProc) -> None:
    service = f"crm-e2e-traces-{random.getrandbits(32):08x}"
    provider = make_provider(service, jaeger.otlp_endpoint)
    tracer = provider.get_tracer("e2e")
    ok_id, _ = emit_trace(tracer, attributes={"crm.tenant.id": "acme", "http.route": "/api/deals"})
    error_id, _ = emit_trace(tracer, error=True, attributes={"crm.tenant.id": "globex"})
    slow_id, _ = emit_trace(tracer, duration_s=2.5, attributes={"crm.tenant.id": "acme"})
    assert provider.force_flush(10_000)
    provider.shutdown()
    poll(lambda: len(jaeger.traces(service)) == 3, 30, "3 traces in Jaeger")

    services = _cli(jaeger=jaeger)
    assert services.returncode == 0 and service in services.stdout

    listed = _cli("--service", service, jaeger=jaeger)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[-3]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {f"{t:032x}" for t in (ok_id, error_id, slow_id)}
    assert " ERROR " in rows[f"{error_id:032x}"] and " ERROR " not in rows[f"{ok_id:032x}"]
    assert "globex" in rows[f"{error_id:032x}"] and rows[f"{ok_id:032x}"].endswith("POST /api/deals")
    assert " 3 " in rows[f"{ok_id:032x}"]  # spans

    def ids(*args: str) -> set[str]:
        done = _cli("--service", service, *args, jaeger=jaeger)
        assert done.returncode == 0, done.stderr
        return {line.split()[-3] for line in done.stdout.splitlines()[1:] if line.strip()}

    assert ids("--errors") == {f"{error_id:032x}"}
    assert ids("--slow") == {f"{slow_id:032x}"}
    assert ids("--tenant", "acme") == {f"{ok_id:032x}", f"{slow_id:032x}"}
    assert len(ids("--limit", "1")) == 1

    waterfall = _cli(f"{error_id:032x}", jaeger=jaeger)
    assert waterfall.returncode == 0, waterfall.stderr
    header, root, handler, db = waterfall.stdout.splitlines()
    assert header.startswith(f"trace {error_id:032x}  {service}  ") and "3 spans" in header
    assert root.startswith("POST /api/deals") and handler.startswith("  create_deal")
    assert db.startswith("    INSERT crm.deals") and "ERROR" in db.split() and "ok" in root.split()


def test_unknown_trace_and_unreachable_jaeger_are_one_line_and_exit_1(jaeger: JaegerProc) -> None:
    missing = "0123456789abcdef0123456789abcdef"
    unknown = _cli(missing, jaeger=jaeger)
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.count("\n") == 1 and f"trace {missing} is not in Jaeger" in unknown.stderr
    gone = subprocess.run([str(CLI), "traces", "--service", "x", "--jaeger", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1 and "is not reachable" in gone.stderr
