"""Scale-out: gateway/loadbalancer.yaml (routing_key: traceID) → 2 x gateway/sampler.yaml → Jaeger.

Each trace spans two services (two TracerProviders, two exporters, the backend
continuing the frontend's propagated context) and its two halves are exported in
SEPARATE batches. Only the frontend root carries the error, so a sampler that got
just the backend half would drop it: a trace lands whole only if the load balancer
sent both halves to the same sampler.

Metrics and logs take the same single endpoint: the Flask example under
`opentelemetry-instrument` exports all three signals to the load balancer, and its
crm_* metrics reach a real Prometheus scraping both samplers, exactly counted; its
logs land in one sampler's log file.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.conftest import start_app
from tests.e2e.prometheus_live import PrometheusProc
from tests.e2e.stack import CONFIGS, CollectorProc, JaegerProc, metric_sum, poll
from tests.e2e.traces import jaeger_parents, make_provider
from tests.support.processes import ROOT

pytestmark = pytest.mark.e2e

N_TRACES = 20


@dataclass
class Tier:
    lb: CollectorProc
    samplers: list[CollectorProc]
    log_dir: Path


@pytest.fixture(scope="module")
def tier(jaeger: JaegerProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tier]:
    log_dir: Path = tmp_path_factory.mktemp("scale-out")
    samplers = [CollectorProc(log_dir, CONFIGS / "gateway" / "sampler.yaml", name=f"sampler{i}", extra_env={
        "JAEGER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTELCOL_DECISION_WAIT": "3s",
        "OTELCOL_BATCH_TIMEOUT": "200ms",
    }).start() for i in range(2)]
    backends = "[" + ",".join(s.grpc_endpoint for s in samplers) + "]"
    lb = CollectorProc(log_dir, CONFIGS / "gateway" / "loadbalancer.yaml", name="lb",
                       extra_env={"LB_BACKENDS": backends}).start()
    yield Tier(lb, samplers, log_dir)
    for proc in (lb, *samplers):
        proc.stop()


def test_two_service_traces_land_whole_through_the_lb(tier: Tier, jaeger: JaegerProc) -> None:
    suffix = f"{random.getrandbits(32):08x}"
    frontend_svc, backend_svc = f"crm-e2e-web-{suffix}", f"crm-e2e-deals-{suffix}"
    frontend = make_provider(frontend_svc, tier.lb.grpc_endpoint)
    backend = make_provider(backend_svc, tier.lb.grpc_endpoint)
    ft, bt = frontend.get_tracer("e2e"), backend.get_tracer("e2e")

    expected: dict[int, dict[str, int | None]] = {}
    open_roots = []
    for _ in range(N_TRACES):
        t0 = time.time_ns()
        root = ft.start_span("GET /deals/{id}", kind=SpanKind.SERVER, start_time=t0)
        call = ft.start_span("GET deals-api", kind=SpanKind.CLIENT, context=trace.set_span_in_context(root),
                             start_time=t0 + 1_000)
        carrier: dict[str, str] = {}
        inject(carrier, context=trace.set_span_in_context(call))
        # backend: continues the remote context, in its own process-like provider
        server = bt.start_span("GET /v1/deals/{id}", kind=SpanKind.SERVER, context=extract(carrier),
                               start_time=t0 + 2_000)
        query = bt.start_span("SELECT crm.deals", kind=SpanKind.CLIENT, context=trace.set_span_in_context(server),
                              start_time=t0 + 3_000)
        query.end(end_time=t0 + 5_000_000)
        server.end(end_time=t0 + 6_000_000)
        call.end(end_time=t0 + 7_000_000)
        root.set_status(Status(StatusCode.ERROR, "upstream 503"))
        open_roots.append((root, t0))
        ctx = root.get_span_context()
        expected[ctx.trace_id] = {"GET /deals/{id}": None, "GET deals-api": ctx.span_id,
                                  "GET /v1/deals/{id}": call.get_span_context().span_id,
                                  "SELECT crm.deals": server.get_span_context().span_id}
    # backend half first, in its own batches/exporter …
    assert backend.force_flush(10_000)
    # … then the frontend half, root (with the error) last.
    for root, t0 in open_roots:
        root.end(end_time=t0 + 8_000_000)
    assert frontend.force_flush(10_000)
    frontend.shutdown()
    backend.shutdown()

    for tid, parents in expected.items():
        jt = poll(lambda tid=tid: (t := jaeger.trace(tid)) and len(t["spans"]) == 4 and t, 30,
                  f"trace {tid:032x} with 4 spans in Jaeger")
        assert jaeger_parents(jt) == parents, f"trace {tid:032x}: wrong parent links"
        services = {p["serviceName"] for p in jt["processes"].values()}
        assert services == {frontend_svc, backend_svc}

    per_sampler = [metric_sum(s.self_metrics(), "otelcol_processor_tail_sampling_new_trace_id_received")
                   for s in tier.samplers]
    assert all(n > 0 for n in per_sampler), f"traces per sampler: {per_sampler} (both should get some)"
    assert sum(per_sampler) == N_TRACES, f"a trace was split across samplers: {per_sampler}"


def test_metrics_and_logs_go_through_the_lb_to_prometheus(tier: Tier) -> None:
    service = f"crm-e2e-lb-{random.getrandbits(32):08x}"
    prom = PrometheusProc(tier.log_dir, [{
        "job_name": "otelcol-crm-exporter", "honor_labels": True,
        "static_configs": [{"targets": [f"127.0.0.1:{s.prometheus_port}" for s in tier.samplers]}]}]).start()
    app = start_app(tier.log_dir, [sys.executable, str(ROOT / "examples" / "flask_crm" / "app.py")], {
        "OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{tier.lb.grpc_endpoint}",
        "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_METRIC_EXPORT_INTERVAL": "500", "OTEL_BLRP_SCHEDULE_DELAY": "200",
        "OTEL_CRM_SAMPLING_MODE": "off", "PYTHONUNBUFFERED": "1"}, name=service)
    try:
        sent = 12
        for i in range(sent):
            response = requests.post(app.url("/leads"), json={"name": f"L{i}", "email": f"l{i}@example.com"},
                                     headers={"X-Tenant-ID": "acme"}, timeout=10)
            assert response.status_code == 201
        query = f'sum(crm_requests_total{{job="{service}",http_route="/leads",crm_tenant_id="acme"}})'
        poll(lambda: prom.value(query) == sent, 60, f"{query} == {sent} in Prometheus")
        # every series of the process on ONE sampler: no label set exported twice
        per_sampler = [metric_sum(s.exported_metrics(), "crm_requests_total", job=service, http_route="/leads")
                       for s in tier.samplers]
        assert sorted(per_sampler) == [0, sent], f"crm_requests_total per sampler: {per_sampler}"
        assert prom.value(f'count(crm_request_duration_seconds_count{{job="{service}"}})')
    finally:
        app.process.stop(timeout=20)
        prom.stop()

    def logged() -> list[str]:
        files = [tier.log_dir / f"{s.name}-app-logs.jsonl" for s in tier.samplers]
        return [f.name for f in files if f.exists() and service in f.read_text() and "lead created" in f.read_text()]

    assert len(poll(logged, 30, "the app's logs in a sampler's log file")) == 1
