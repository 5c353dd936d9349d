"""Alerts, recording rules and dashboards on a live Prometheus fed by the example app under real traffic.

Stack (all on loopback): Jaeger; a healthy otelcol-crm (collector-config/otelcol.yaml) receiving
two instances of the Flask example under `opentelemetry-instrument` — `crm-healthy` (ok traffic
for three tenants: leads, LLM-qualified leads, HubSpot syncs, searches) and `crm-bad` (its outside
services unreachable, a tiny export queue and sampler buffer, plus failing and slow routes); a
collector whose memory_limiter refuses everything; a collector whose backend is down, with a tiny
queue and trace buffer (telemetrygen feeds both); a scrape target that is down. Prometheus scrapes
every second and evaluates the shipped rules (alerts with shorter `for:` only).

Checked: every rule loads and evaluates without error; each alert fires when its condition is
produced for real and never (not even pending) for the healthy app or collector; every recording
rule has data; every PromQL expression of every dashboard panel returns data, and the key panels
match what the traffic sent.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from otel_crm.helpers.pricing import load_price_table
from tests.conftest import App, start_app
from tests.e2e.prometheus_live import PrometheusProc, test_rule_files
from tests.e2e.stack import CONFIGS, CollectorProc, JaegerProc, binary
from tests.support.processes import ROOT, ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.e2e

FOR = "5s"
TENANTS = {"acme": 3, "globex": 2, "initech": 1}  # relative traffic weights
COMPANY = "Acme Corp"
# journeys.json reads journey traffic this test does not send: tests/e2e/test_journey_rules.py
# evaluates every one of its panels on a live Prometheus fed by journeys.
DASHBOARDS = sorted(p for p in (CONFIGS / "dashboards").glob("*.json") if p.name != "journeys.json")
# Every alert and the label set it must fire with (a component name is resolved by the fixture).
EXPECTED = {
    "CrmHighErrorRate": {"job": "crm-bad"},
    "CrmHighLatencyP95": {"job": "crm-bad"},
    "CrmWorkflowFailureRate": {"job": "crm-bad", "crm_workflow_name": "qualify_lead"},
    "CrmTelemetryDropped": {"job": "crm-bad", "crm_signal": "traces", "crm_drop_reason": "queue_full"},
    "CrmSamplerEvictions": {"job": "crm-bad"},
    "OtelcolReceiverRefusing": {"instance": "refusing"},
    "OtelcolExporterQueueNearlyFull": {"instance": "broken"},
    "OtelcolExporterEnqueueFailed": {"instance": "broken"},
    "OtelcolTailSamplingDroppedTooEarly": {"instance": "overloaded"},
    "OtelcolCrmTargetDown": {"instance": "down"},
}
# Needs an hour of history before its condition can hold: evaluated and kept quiet only.
NOT_PRODUCIBLE = {"CrmServiceStoppedReporting"}


@dataclass
class Traffic:
    requests: Counter[str] = field(default_factory=Counter)  # healthy requests per tenant
    qualified: Counter[str] = field(default_factory=Counter)  # healthy LLM-qualified leads per tenant
    bad_requests: int = 0
    bad_errors: int = 0


@dataclass
class Live:
    prom: PrometheusProc
    names: dict[str, str]  # component name -> its scrape address
    fired_after: dict[str, float]  # alert -> seconds from the start of traffic to firing
    noisy: list[dict[str, Any]]  # alerts ever seen (pending or firing) for a healthy component
    traffic: Traffic
    warmed: float  # time by which every healthy series existed (before the counted traffic)
    finished: float


def _app(tmp_path: Path, name: str, collector: CollectorProc, **extra: str) -> App:
    env = {
        "OTEL_SERVICE_NAME": name,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{collector.grpc_endpoint}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_CRM_SHUTDOWN_TIMEOUT_SECONDS": "3",
        "OTEL_CRM_ACCESS_LOG": "false",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    return start_app(tmp_path, [sys.executable, str(ROOT / "examples" / "flask_crm" / "app.py")], env, name)


def _telemetrygen(log_dir: Path, name: str, collector: CollectorProc, *args: str) -> ManagedProcess:
    exe = binary("TELEMETRYGEN_BIN", "telemetrygen", "telemetrygen")
    return ManagedProcess(name, [str(exe), *args, "--otlp-endpoint", collector.grpc_endpoint, "--otlp-insecure",
                                 "--duration", "inf"], log_dir=log_dir)


class _HealthyClient:
    """One tenant's ok traffic, counted as sent."""

    def __init__(self, app: App, tenant: str, traffic: Traffic, lock: threading.Lock) -> None:
        self.app, self.tenant, self.traffic, self.lock = app, tenant, traffic, lock
        self.http = requests.Session()
        self.http.headers["X-Tenant-ID"] = tenant

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, self.app.url(path), timeout=20, **kwargs)
        assert response.status_code < 400, f"{method} {path}: {response.status_code} {response.text[:200]}"
        with self.lock:
            self.traffic.requests[self.tenant] += 1
        return response.json()

    def round(self, i: int) -> None:
        lead = self.call("POST", "/leads", json={"name": f"Lead {i}", "email": f"lead{i}@example.com",
                                                 "company": COMPANY})
        self.call("GET", f"/leads/{lead['id']}")
        self.call("POST", f"/leads/{lead['id']}/qualify")
        with self.lock:
            self.traffic.qualified[self.tenant] += 1
        self.call("GET", "/leads")
        self.call("GET", "/ok")
        if i % 3 == 0:
            self.call("POST", "/sync/hubspot")
            self.call("GET", "/leads/search", params={"q": "Company"})
            self.call("POST", f"/leads/{lead['id']}/enrich")


def _bad_round(app: App, http: requests.Session, lead_id: int, traffic: Traffic, lock: threading.Lock) -> None:
    codes = [http.get(app.url("/fail"), timeout=20).status_code,
             http.post(app.url("/sync/hubspot"), timeout=20).status_code,  # connector: services down
             http.post(app.url(f"/leads/{lead_id}/qualify"), timeout=20).status_code]  # LLM down: workflow fails
    with lock:
        traffic.bad_requests += len(codes)
        traffic.bad_errors += sum(1 for c in codes if c >= 500)


def _slow(app: App, http: requests.Session, traffic: Traffic, lock: threading.Lock) -> None:
    assert http.get(app.url("/slow?seconds=1.2"), timeout=20).status_code == 200
    with lock:
        traffic.bad_requests += 1


def _matches(alert: dict[str, Any], want: dict[str, str]) -> bool:
    return all(alert["labels"].get(k) == v for k, v in want.items())


@pytest.fixture(scope="module")
def live(jaeger: JaegerProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    log_dir = tmp_path_factory.mktemp("prometheus-live")
    fast = {"JAEGER_OTLP_ENDPOINT": jaeger.otlp_endpoint, "OTELCOL_SPANMETRICS_FLUSH_INTERVAL": "1s",
            "OTELCOL_BATCH_TIMEOUT": "200ms", "OTELCOL_DECISION_WAIT": "2s"}
    healthy = CollectorProc(log_dir, CONFIGS / "otelcol.yaml", name="healthy", extra_env=fast)
    refusing = CollectorProc(log_dir, CONFIGS / "otelcol.yaml", name="refusing", extra_env={
        **fast, "OTELCOL_MEMORY_LIMIT_MIB": "4", "OTELCOL_MEMORY_SPIKE_MIB": "1"})
    broken = CollectorProc(log_dir, CONFIGS / "otelcol.yaml", name="broken", extra_env={
        **fast, "JAEGER_OTLP_ENDPOINT": f"127.0.0.1:{free_port()}", "OTELCOL_EXPORT_QUEUE_SIZE": "5"})
    # More new traces per decision_wait than num_traces: undecided traces are evicted. (Not the
    # broken collector: a trace ring that overflows steadily lets no trace through to a queue.)
    overloaded = CollectorProc(log_dir, CONFIGS / "otelcol.yaml", name="overloaded", extra_env={
        **fast, "OTELCOL_NUM_TRACES": "10", "OTELCOL_EXPECTED_NEW_TRACES_PER_SEC": "10"})
    down = f"127.0.0.1:{free_port()}"
    started: list[Any] = []
    try:
        collectors = {"healthy": healthy, "refusing": refusing, "broken": broken, "overloaded": overloaded}
        for collector in collectors.values():
            started.append(collector.start())
        names = {name: f"127.0.0.1:{c.telemetry_port}" for name, c in collectors.items()}
        names |= {"down": down, "exporter": f"127.0.0.1:{healthy.prometheus_port}"}
        prom = PrometheusProc(log_dir, [
            {"job_name": "otelcol-crm-exporter", "honor_labels": True,
             "static_configs": [{"targets": [names["exporter"]]}]},
            {"job_name": "otelcol-crm-telemetry",
             "static_configs": [{"targets": [names[n] for n in (*collectors, "down")]}]},
        ], test_rule_files(log_dir, FOR))
        started.append(prom.start())
        good = _app(log_dir, "crm-healthy", healthy)
        started.append(good.process)
        bad = _app(log_dir, "crm-bad", healthy, CRM_SERVICES_URL=f"http://127.0.0.1:{free_port()}",
                   OTEL_BSP_MAX_QUEUE_SIZE="1", OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_CRM_SAMPLING_MAX_TRACES="1")
        started.append(bad.process)
        for name, collector, args in (
                ("gen-refused", refusing, ["traces", "--rate", "10"]),
                ("gen-refused-logs", refusing, ["logs", "--rate", "10"]),
                ("gen-broken", broken, ["traces", "--rate", "20", "--status-code", "Error"]),
                ("gen-overloaded", overloaded, ["traces", "--rate", "30"])):
            started.append(_telemetrygen(log_dir, name, collector, *args))

        traffic, lock = Traffic(), threading.Lock()
        bad_http, bad_http2 = requests.Session(), requests.Session()
        for session in (bad_http, bad_http2):
            session.headers["X-Tenant-ID"] = "umbrella"
        bad_lead = bad_http.post(bad.url("/leads"), json={"name": "B", "email": "b@example.com",
                                                          "company": COMPANY}, timeout=20).json()["id"]
        clients = [_HealthyClient(good, tenant, traffic, lock) for tenant in TENANTS]
        # Warm-up: every healthy series exists before the counted traffic (increase() over a
        # dashboard's range then sees all of it), then the counts start from zero.
        for client in clients:
            client.round(0)
        warm = dict(traffic.requests)

        def warm_scraped() -> bool:  # every warm-up request in Prometheus: the baseline is complete
            got = _by(prom.query('sum by (crm_tenant_id) (crm_requests_total{job="crm-healthy"})'), "crm_tenant_id")
            return {tenant: got.get(tenant) for tenant in warm} == warm

        wait_until(warm_scraped, 60, f"the warm-up requests {warm} in Prometheus", interval=0.5)
        traffic.requests.clear()
        traffic.qualified.clear()
        warmed = time.time()

        stop = threading.Event()
        errors: list[BaseException] = []

        def loop(fn: Any, pause: float) -> None:  # paced: 2 shared cores run all of this
            i = 1
            while not stop.is_set():
                try:
                    fn(i)
                except BaseException as exc:  # reported by the test below
                    errors.append(exc)
                    return
                i += 1
                stop.wait(pause)

        # The example keeps its leads in one SQLite connection: one thread per app touches the
        # database. The bad app's slow route runs beside it in three threads (~15% of its
        # requests take 1.2 s; several traces open at once: the in-process sampler, capped at
        # one, must evict).
        weights = [next(c for c in clients if c.tenant == t) for t, w in TENANTS.items() for _ in range(w)]
        slow_sessions = [bad_http2, requests.Session(), requests.Session()]
        pool = ThreadPoolExecutor(2 + len(slow_sessions))
        pool.submit(loop, lambda i: weights[i % len(weights)].round(i), 0.05)
        pool.submit(loop, lambda i: _bad_round(bad, bad_http, bad_lead, traffic, lock), 0.2)
        for session in slow_sessions:
            session.headers["X-Tenant-ID"] = "umbrella"
            pool.submit(loop, lambda i, session=session: _slow(bad, session, traffic, lock), 0)

        t0 = time.monotonic()
        fired: dict[str, float] = {}
        noisy: list[dict[str, Any]] = []
        healthy_labels = [{"job": "crm-healthy"}, {"instance": names["healthy"]}, {"instance": names["exporter"]}]
        expected = {alert: {k: names.get(v, v) if k == "instance" else v for k, v in want.items()}
                    for alert, want in EXPECTED.items()}

        def watch() -> bool:
            for alert in prom.alerts():
                if any(_matches(alert, h) for h in healthy_labels):
                    noisy.append(alert)
                name = alert["labels"]["alertname"]
                if alert["state"] == "firing" and name in expected and _matches(alert, expected[name]):
                    fired.setdefault(name, round(time.monotonic() - t0, 1))
            return len(fired) == len(expected) or bool(errors)

        try:
            try:
                wait_until(watch, 150, "every alert firing", interval=0.5)
            except TimeoutError:
                states = sorted({(a["labels"]["alertname"], a["state"], a["labels"].get("job", ""),
                                  a["labels"].get("instance", "")) for a in prom.alerts()})
                missing = sorted(set(expected) - set(fired))
                pytest.fail(f"alerts not firing: {missing}; fired: {fired}; expected labels: {expected}; "
                            f"current alerts: {states}; errors: {errors}")
            quiet_until = time.monotonic() + 10  # healthy traffic goes on: still no healthy alert
            wait_until(lambda: watch() and time.monotonic() > quiet_until, 30, "a quiet healthy stretch",
                       interval=0.5)
        finally:
            stop.set()
            pool.shutdown(wait=True)
        assert not errors, f"traffic failed: {errors[0]!r}"
        finished = time.time()
        yield Live(prom, names, fired, noisy, traffic, warmed, finished)
    finally:
        for proc in reversed(started):
            proc.stop()


def test_recording_rules_unit_tests_pass() -> None:
    promtool = str(binary("PROMTOOL", "promtool", "promtool"))
    result = subprocess.run([promtool, "test", "rules", "rules.test.yaml"], cwd=CONFIGS / "prometheus",
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "SUCCESS" in result.stdout + result.stderr, result.stdout + result.stderr


def test_every_rule_is_loaded_and_evaluates_without_error(live: Live) -> None:
    rules = live.prom.rules()
    shipped = set(re.findall(r"^\s+- (?:alert|record): (\S+)", (CONFIGS / "prometheus" / "alerts.yaml").read_text()
                             + (CONFIGS / "prometheus" / "rules.yaml").read_text(), re.M))
    assert {r["name"] for r in rules} == shipped
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok" or r.get("lastError")]
    assert not broken, f"rules failing on a live Prometheus: {broken}"


def test_every_recording_rule_has_data(live: Live) -> None:
    empty = [r["name"] for r in live.prom.rules() if r["type"] == "recording" and not live.prom.query(r["name"])]
    assert not empty, f"recording rules without data after the traffic: {empty}"


def test_each_alert_fires_when_its_condition_is_produced(live: Live) -> None:
    print(f"alert firing times (s from start of traffic, for: {FOR}):", json.dumps(live.fired_after, indent=1))
    assert set(live.fired_after) == set(EXPECTED)
    alerts = {r["name"] for r in live.prom.rules() if r["type"] == "alerting"}
    assert alerts == set(EXPECTED) | NOT_PRODUCIBLE


def test_no_alert_for_healthy_traffic(live: Live) -> None:
    assert not live.noisy, f"alerts for the healthy app/collector: {live.noisy[:3]}"


# --- dashboards ------------------------------------------------------------------------------------

def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def _expressions(variables: dict[str, str], range_s: int) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL with the template variables substituted) for every target."""
    out = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if not expr:
                    continue
                for name, value in {**variables, "__range": f"{range_s}s", "__rate_interval": "1m",
                                    "__interval": "15s"}.items():
                    expr = re.sub(r"\$\{" + name + r"(:[a-z]+)?\}|\$" + name + r"\b", value, expr)
                assert "$" not in expr, f"{path.name} / {panel.get('title')}: unsubstituted variable in {expr}"
                out.append((path.stem, str(panel.get("title")), expr))
    return out


def _variables() -> dict[str, str]:
    names: set[str] = set()
    for path in DASHBOARDS:
        for var in json.loads(path.read_text()).get("templating", {}).get("list", []):
            names.add(var["name"])
    # "All" selected, as a dashboard opens: every job and every tenant of this run.
    known = {"job": "crm-healthy|crm-bad", "tenant": ".*", "instance": ".*", "datasource": "prometheus"}
    unknown = names - set(known)
    assert not unknown, f"dashboard variables the test does not know how to fill: {unknown}"
    return {name: known[name] for name in names}


def test_every_dashboard_panel_expression_returns_data(live: Live) -> None:
    assert {p.stem for p in DASHBOARDS} >= {"crm-requests", "crm-workflows", "crm-connectors", "crm-llm",
                                            "crm-tenants", "crm-telemetry-pipeline"}
    range_s = int(live.finished - live.warmed) + 30
    expressions = _expressions(_variables(), range_s)
    empty = [(d, t, e) for d, t, e in expressions if not live.prom.query(e, at=live.finished)]
    print(f"{len(expressions)} panel expressions evaluated, {len(expressions) - len(empty)} returned data")
    assert not empty, "panels without data:\n" + "\n".join(f"{d} / {t}: {e}" for d, t, e in empty)


def _panel_expr(dashboard: str, title: str, range_s: int) -> str:
    matches = [e for d, t, e in _expressions(_variables(), range_s) if d == dashboard and t == title]
    assert len(matches) == 1, f"{dashboard} / {title}: {len(matches)} expressions"
    return matches[0]


def _by(result: list[dict[str, Any]], *labels: str) -> dict[Any, float]:
    def key(metric: dict[str, str]) -> Any:
        return metric.get(labels[0], "") if len(labels) == 1 else tuple(metric.get(k, "") for k in labels)
    return {key(r["metric"]): float(r["value"][1]) for r in result}


def _check_increase_panel(live: Live, panel_id: tuple[str, str], *, counter: str, labels: tuple[str, ...],
                          sent: dict[Any, float]) -> None:
    """An increase() panel over the traffic. The counters in Prometheus must have grown by exactly
    what was sent; the panel shows that growth extrapolated by increase() to the ends of its
    range, i.e. between the exact value and value x range / (range - 2 scrape intervals)."""
    dashboard, title = panel_id
    by = ", ".join(labels)
    raw = f'sum by ({by}) ({counter}{{job="crm-healthy"}})'
    before = _by(live.prom.query(raw, at=live.warmed), *labels)
    exact: dict[Any, float] = {}

    def landed() -> bool:  # the last requests' metrics are at most an export + a scrape away
        exact.clear()
        exact.update({k: v - before.get(k, 0.0) for k, v in _by(live.prom.query(raw), *labels).items()})
        return all(exact.get(k) == pytest.approx(v, rel=1e-9) for k, v in sent.items())

    with contextlib.suppress(TimeoutError):
        wait_until(landed, 15, f"{counter} to reach what was sent", interval=0.5)
    end = time.time()
    range_s = int(end - live.warmed) + 2
    panel = _by(live.prom.query(_panel_expr(dashboard, title, range_s), at=end), *labels)
    print(f"{dashboard} / {title}: sent {sent}, Prometheus delta {exact}, panel {panel} (range {range_s}s)")
    for key, value in sent.items():
        assert exact.get(key) == pytest.approx(value, rel=1e-9), (
            f"{counter} {key}: Prometheus {exact.get(key)}, sent {value}")
        assert value * 0.999 <= panel.get(key, 0.0) <= value * range_s / (range_s - 2.2), (
            f"{dashboard} / {title} {key}: panel {panel.get(key)}, sent {value} (range {range_s}s)")


def test_requests_per_tenant_panel_matches_the_traffic(live: Live) -> None:
    _check_increase_panel(live, ("crm-tenants", "Requests by tenant"), counter="crm_requests_total",
                          labels=("crm_tenant_id",), sent=dict(live.traffic.requests))


def test_llm_cost_per_tenant_and_model_panel_matches_the_traffic(live: Live) -> None:
    prompt = json.dumps([{"role": "user", "content": f"Is {COMPANY} a good fit?"}])
    per_call = load_price_table().cost("openai", "gpt-4o-mini-2024-07-18", max(1, len(prompt) // 4), 12)
    assert per_call
    sent = {(tenant, "gpt-4o-mini"): calls * per_call for tenant, calls in live.traffic.qualified.items()}
    _check_increase_panel(live, ("crm-llm", "Cost by tenant and model"), counter="crm_gen_ai_cost_total",
                          labels=("crm_tenant_id", "gen_ai_request_model"), sent=sent)


def test_error_rate_panel_matches_the_traffic(live: Live) -> None:
    got = _by(live.prom.query(_panel_expr("crm-requests", "Error rate", 0), at=live.finished), "job")
    assert got["crm-healthy"] == 0
    sent_ratio = live.traffic.bad_errors / live.traffic.bad_requests
    assert got["crm-bad"] == pytest.approx(sent_ratio, abs=0.1), f"panel {got['crm-bad']}, sent {sent_ratio}"


def test_dashboards_are_provisioned_by_docker_compose() -> None:
    compose = (CONFIGS / "docker-compose.yaml").read_text()
    provisioning = CONFIGS / "dashboards" / "provisioning"
    datasource = (provisioning / "datasources" / "prometheus.yaml").read_text()
    uid = re.search(r"^\s+uid:\s*(\S+)", datasource, re.M)
    assert uid and "url: http://prometheus:9090" in datasource
    assert "grafana:" in compose and "./dashboards/provisioning:/etc/grafana/provisioning:ro" in compose
    provider = (provisioning / "dashboards" / "otel-crm.yaml").read_text()
    mount = re.search(r"- \./dashboards:(\S+):ro", compose)
    assert mount and f"path: {mount.group(1)}" in provider
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard):
            ds = panel.get("datasource")
            if panel.get("type") != "row":
                assert ds and ds.get("uid") in (uid.group(1), "${datasource}"), f"{path.name} / {panel.get('title')}"

