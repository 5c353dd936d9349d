"""The journey rules and dashboard against the real thing: the Flask example under
`opentelemetry-instrument` → collector-config/otelcol.yaml → its `prometheus` exporter → a live
Prometheus loading collector-config/prometheus/journeys.rules.yaml. Checks that every metric name
the rules and the dashboard read is one the exporter serves, and the values they compute."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import App, flask_app, instrumented_env
from tests.e2e.stack import CONFIGS, CollectorProc, binary, free_port, http_get, run
from tests.support.processes import ManagedProcess, http_ok, wait_until

pytestmark = pytest.mark.e2e
RULES = CONFIGS / "prometheus" / "journeys.rules.yaml"
DASHBOARD = CONFIGS / "dashboards" / "journeys.json"
JOURNEYS_FILE = CONFIGS.parent / "examples" / "journeys" / "crm_activation.json"
# (tenant, minutes since signup or None for a user who only signs up, walks the whole journey);
# the others stop after their first lead. The last one's signup time is 10 minutes ahead of the
# app's clock: recorded and flagged (started_in_future).
USERS = [("acme", 0, True), ("acme", 50, True), ("acme", 100, False),
         ("globex", 130, True), ("globex", 140, True), ("globex", 150, True), ("globex", 200, True),
         ("globex", None, False), ("globex", -10, False)]


def test_journey_rules_unit_tests_pass() -> None:
    promtool = str(binary("PROMTOOL", "promtool", "promtool"))
    check = run([promtool, "check", "rules", str(RULES)])
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run([promtool, "test", "rules", "journeys.test.yaml"], cwd=RULES.parent,
                           capture_output=True, text=True, timeout=120, check=False)
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout + tests.stderr, tests.stdout + tests.stderr


class Prometheus:
    """A live Prometheus scraping the collector's exporter every second, the journey rules loaded."""

    def __init__(self, log_dir: Path, target: str) -> None:
        self.port = free_port()
        config = log_dir / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "otelcol-crm-exporter", "honor_labels": True,
                                "static_configs": [{"targets": [target]}]}]}))
        exe = binary("PROMETHEUS_BIN", "prometheus", "promtool")
        self.process = ManagedProcess("prometheus", [
            str(exe), f"--config.file={config}", f"--storage.tsdb.path={log_dir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}"], log_dir=log_dir)
        self.process.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{self.port}/-/ready"))

    def query(self, expr: str) -> list[dict[str, Any]]:
        status, body = http_get(f"http://127.0.0.1:{self.port}/api/v1/query?"
                                + urllib.parse.urlencode({"query": expr}))
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"{expr}: {answer}"
        return list(answer["data"]["result"])

    def value(self, expr: str) -> dict[str, float]:
        """Result values by the labels that are not job/instance."""
        return {",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k not in ("job", "__name__")):
                float(r["value"][1]) for r in self.query(expr)}


def _traffic(app: App) -> None:
    now = datetime.now(timezone.utc)
    for tenant, minutes, completes in USERS:
        body = {"email": f"user@{tenant}.example"}
        if minutes:
            body["signed_up_at"] = (now - timedelta(minutes=minutes)).isoformat()
        headers = {"X-Tenant-ID": tenant}
        user = requests.post(app.url("/signup"), json=body, headers=headers, timeout=10).json()["id"]
        if minutes is None or minutes < 0:
            continue
        headers["X-User-ID"] = str(user)
        lead = requests.post(app.url("/leads"), json={"name": "L", "email": "l@example.com", "company": "C"},
                             headers=headers, timeout=10).json()
        if completes:
            requests.post(app.url(f"/leads/{lead['id']}/enrich"), headers=headers, timeout=10)
            requests.post(app.url("/sync/hubspot"), headers=headers, timeout=10)


LABELS = {"crm_journey_name", "crm_journey_milestone_name", "crm_journey_anomaly"}


def _names(text: str) -> set[str]:
    """Metric names PromQL (or a rules file, comments aside) reads; recording-rule names have a
    colon and are not the exporter's to serve."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return set(re.findall(r"(?<![:\w])(crm_journey_[a-z_]+)(?![:\w])", code)) - LABELS


def test_rules_and_dashboard_on_live_prometheus(tmp_path: Path) -> None:
    collector = CollectorProc(tmp_path, CONFIGS / "otelcol.yaml",
                              extra_env={"JAEGER_OTLP_ENDPOINT": f"127.0.0.1:{free_port()}"}).start()
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{collector.prometheus_port}")
    try:
        env = instrumented_env(None, "journey-e2e", OTEL_CRM_SAMPLING_MODE="collector",
                               OTEL_CRM_JOURNEYS_FILE=str(JOURNEYS_FILE))
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{collector.grpc_endpoint}"
        app = flask_app(tmp_path, env)
        _traffic(app)
        app.process.stop()

        # What the exporter serves: the names the rules and the dashboard read all exist.
        wait_until(lambda: any(s.name == "crm_journey_completions_total" and s.value == 4
                               and s.labels.get("crm_tenant_id") == "globex"
                               for s in collector.exported_metrics()), 30, "the journey metrics exported")
        served = {s.name for s in collector.exported_metrics()}
        dashboard = json.loads(DASHBOARD.read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        read = _names(RULES.read_text()) | {n for e in exprs for n in _names(e)}
        assert read and read <= served, f"read but not served: {sorted(read - served)}"
        assert {"crm_journey_elapsed_seconds_bucket", "crm_journey_efficiency_sum", "crm_journey_starts_total",
                "crm_journey_target_seconds"} <= read

        # The recording rules, evaluated live (every series was born inside the 6h window).
        wait_until(lambda: prometheus.value("job_journey:crm_journey_completions:increase6h") == {
            "crm_journey_name=crm_activation": 6}, 60, "the recording rules")
        assert prometheus.value("job_journey:crm_journey_starts:increase6h") == {"crm_journey_name=crm_activation": 9}
        assert prometheus.value("job_journey:crm_journey_completion_rate:ratio6h") == {
            "crm_journey_name=crm_activation": pytest.approx(6 / 9)}
        assert prometheus.value("job_journey_tenant:crm_journey_completion_rate:ratio6h") == pytest.approx({
            "crm_journey_name=crm_activation,crm_tenant_id=acme": 2 / 3,
            "crm_journey_name=crm_activation,crm_tenant_id=globex": 4 / 6})
        ttfs = [0, 50, 130, 140, 150, 200]  # minutes, at completion (plus the seconds the test took)
        efficiency = sum(min(1.0, 30 / m) if m else 1.0 for m in ttfs) / len(ttfs)
        (mean,) = prometheus.value("job_journey:crm_journey_efficiency:avg6h").values()
        assert mean == pytest.approx(efficiency, abs=0.005)
        # Median of six: rank 3 falls in (7200, 10800] with 2 below and 3 in it: 7200 + 3600 / 3.
        assert prometheus.value("job_journey:crm_journey_ttf_seconds:p50_6h") == {
            "crm_journey_name=crm_activation": pytest.approx(8400)}
        assert prometheus.value("job_journey_tenant:crm_journey_ttf_seconds:p50_6h")[
            "crm_journey_name=crm_activation,crm_tenant_id=globex"] == pytest.approx(9600)

        # The TTF alerts are evaluated: warning and critical pending (they fire after 15 min), not escalation.
        def pending() -> set[str]:
            return {r["metric"]["alertname"] for r in prometheus.query('ALERTS{alertstate="pending"}')}

        wait_until(lambda: pending() == {"CrmJourneyTTFWarning", "CrmJourneyTTFCritical"}, 30, "pending alerts")

        # Every dashboard query runs and returns data, with the variables a user would pick.
        values = {"$job": ".*", "$journey": "crm_activation", "$tenant": ".*", "$__range": "1h"}
        results = {}
        for expr in exprs:
            concrete = expr
            for name, value in values.items():
                concrete = concrete.replace(name, value)
            assert "$" not in concrete
            results[expr] = prometheus.query(concrete)
            assert results[expr], f"no data: {concrete}"
        stats = {p["title"]: float(prometheus.query(
            p["targets"][0]["expr"].replace("$job", ".*").replace("$journey", "crm_activation")
            .replace("$tenant", ".*").replace("$__range", "1h"))[0]["value"][1])
            for p in dashboard["panels"] if p["type"] == "stat"}
        assert stats["Starts"] == 9 and stats["Completions"] == 6
        assert stats["Completion rate"] == pytest.approx(6 / 9)
        assert stats["Efficiency score"] == pytest.approx(efficiency, abs=0.005)
        assert stats["Anomalies"] == 1 and stats["Median time to first value"] == pytest.approx(8400)
    finally:
        prometheus.process.stop()
        collector.stop()
