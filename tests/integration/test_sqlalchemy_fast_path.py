"""otel_crm's cheaper SQLAlchemy statement path under the real `opentelemetry-instrument`, exporting to
the real collector: the same workload (tests/integration/sqlalchemy_app.py) with it
(OTEL_CRM_FAST_SPANS default) and without it (`false`: the instrumentation's own hooks) must export
the same spans — after otel_crm's corrections (docs/semconv.md), which apply to both alike."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Collector, instrumented_env, wait_until
from tests.support.processes import ROOT, VENV_BIN

pytestmark = pytest.mark.integration

APP = ROOT / "tests" / "integration" / "sqlalchemy_app.py"


def _run(collector: Collector, tmp_path: Path, service: str, **extra: str) -> tuple[str, str]:
    db, status = tmp_path / "crm.db", tmp_path / f"{service}.json"
    db.unlink(missing_ok=True)  # the same file (db.namespace) and the same rows for both runs
    env = instrumented_env(collector, service, OTEL_CRM_SAMPLING_MODE="off", OTEL_CRM_LOG_FORMAT="none", **extra)
    result = subprocess.run([str(VENV_BIN / "opentelemetry-instrument"), str(VENV_BIN / "python"), str(APP), str(db),
                             str(status)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(status.read_text())["hook"], result.stderr


def _spans(collector: Collector, service: str) -> list[tuple[Any, ...]]:
    spans = sorted((s for s in collector.spans() if s.resource.get("service.name") == service),
                   key=lambda s: s.start_ns)
    names = {s.span_id: s.name for s in spans}
    return [(s.name, s.kind, names.get(s.parent_span_id, ""), list(s.attributes.items()), s.status_code, s.events,
             s.scope) for s in spans]


def test_the_cheaper_path_exports_the_same_spans_as_the_instrumentations_own(collector: Collector,
                                                                              tmp_path: Path) -> None:
    fast_hook, fast_err = _run(collector, tmp_path, "sql-fast")
    upstream_hook, _ = _run(collector, tmp_path, "sql-upstream", OTEL_CRM_FAST_SPANS="false")
    assert fast_hook == "otel_crm._internal.integrations.sqlalchemy_fast"
    assert upstream_hook == "opentelemetry.instrumentation.sqlalchemy.engine"
    assert "slower) path is used" not in fast_err

    def both_exported() -> bool:
        return all(any(s.name == "job" and s.resource.get("service.name") == service for s in collector.spans())
                   for service in ("sql-fast", "sql-upstream"))

    wait_until(both_exported, 30, "both runs' spans in the collector output")
    fast, upstream = _spans(collector, "sql-fast"), _spans(collector, "sql-upstream")
    assert fast == upstream
    # What the workload makes, as exported: statements under the job, corrected operation names,
    # the error status, connect spans named after their target, nothing for the suppressed statements.
    db_spans = [span for span in fast if span[2] == "job"]
    attributes = [dict(span[3]) for span in db_spans]
    assert {a.get("db.operation.name") for a in attributes} >= {"INSERT", "SELECT"}
    assert any(span[4] == 2 for span in db_spans), "the failing statement's span has status ERROR"
    assert str(tmp_path / "crm.db") in {span[0] for span in db_spans}, "connect spans are named {target}"
    assert not any("SELECT 2" in str(a) or "SELECT 3" in str(a) for a in attributes)
