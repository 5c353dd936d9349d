"""The collector tier as deploy/helm's values run it, on loopback instead of pods.

Each collector gets exactly the container the chart renders from the values: `otelcol-crm` with the
values' `command.extraArgs` (image paths mapped to this checkout; the load balancer's resolver file
written from the ConfigMap its values create), the chart's MY_POD_IP (127.0.0.1) and the values'
`extraEnvs`, with each container port moved to a free one. The load balancer's DNS resolver gets
the sampler's address as an IP literal: no cluster DNS here, so the headless Service's several A
records are not exercised (tests/e2e/test_scale_out.py covers the ring over several samplers).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.conftest import Collector, otelcol_binary, start_file_collector, wait_until
from tests.e2e.stack import http_get, metric_sum, parse_prometheus
from tests.support.processes import ROOT, ManagedProcess, free_port, http_ok, tcp_open

pytestmark = pytest.mark.integration

HELM_DIR = ROOT / "deploy" / "helm"
CONTAINER_PORTS = (4317, 4318, 8888, 8889, 13133)


class Pod:
    """One collector container: the values' args and env, its ports remapped to free ones."""

    def __init__(self, name: str, tmp_path: Path, remote: dict[str, str] | None = None) -> None:
        self.values = yaml.safe_load((HELM_DIR / f"{name}-values.yaml").read_text())
        self.ports = {port: free_port() for port in CONTAINER_PORTS}
        self.name, self.tmp_path = name, tmp_path
        mounts = tmp_path / f"{name}-mounts"
        for manifest in self.values.get("extraManifests", []):  # the ConfigMaps, as their volumes mount them
            mount = next(m for m in self.values["extraVolumeMounts"] if any(
                v["name"] == m["name"] and v["configMap"]["name"] == manifest["metadata"]["name"]
                for v in self.values["extraVolumes"]))
            directory = mounts / mount["mountPath"].lstrip("/")
            directory.mkdir(parents=True)
            for filename, text in manifest["data"].items():
                (directory / filename).write_text(text)
        self.args = [re.sub(r"^--config=/etc/otelcol-crm/gateway/", f"--config={ROOT}/collector-config/gateway/",
                            a).replace("--config=/etc/otelcol-crm/k8s/", f"--config={mounts}/etc/otelcol-crm/k8s/")
                     for a in self.values["command"]["extraArgs"]]
        self.env = {"MY_POD_IP": "127.0.0.1"}
        for item in self.values["extraEnvs"]:
            value = re.sub(r"\$\(([A-Z_]+)\)", lambda m: self.env[m[1]], item["value"])
            value = remote.get(item["name"], value) if remote else value
            if item["name"] not in (remote or {}):
                value = re.sub(r"(^|:)(\d+)$", lambda m: m[1] + str(self.ports.get(int(m[2]), m[2])), value)
            self.env[item["name"]] = value
        self.process: ManagedProcess | None = None

    def start(self) -> Pod:
        argv = [str(otelcol_binary()), *self.args]
        self.process = ManagedProcess(self.name, argv, env=self.env, log_dir=self.tmp_path)
        self.process.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{self.ports[13133]}/")
                                  and tcp_open(self.ports[4317]))
        return self

    def self_metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.ports[8888]}/metrics")[1].decode()

    def stop(self) -> None:
        if self.process:
            self.process.stop()


@pytest.fixture
def tier(tmp_path: Path) -> Iterator[tuple[Pod, Pod, Collector]]:
    jaeger = start_file_collector(tmp_path / "jaeger")  # stands in for Jaeger: files of what it receives
    sampler = Pod("sampler", tmp_path, remote={"JAEGER_OTLP_ENDPOINT": f"127.0.0.1:{jaeger.grpc_port}"})
    sampler.env["OTELCOL_DECISION_WAIT"] = "1s"  # the test's only change to the sampler: decide quickly
    lb = Pod("loadbalancer", tmp_path, remote={"LB_DNS_HOSTNAME": "127.0.0.1",
                                              "LB_DNS_PORT": str(sampler.ports[4317])})
    try:
        sampler.start()
        lb.start()
        yield lb, sampler, jaeger
    finally:  # also when a start fails: nothing outlives the test
        for proc in (lb, sampler):
            proc.stop()
        jaeger.process.stop()


def test_load_balancer_resolves_the_sampler_by_dns_and_error_traces_reach_jaeger(
        tier: tuple[Pod, Pod, Collector]) -> None:
    lb, sampler, jaeger = tier
    provider = TracerProvider(resource=Resource({"service.name": "k8s-tier-test"}))
    # What an injected pod does: OTLP/HTTP (the operator's Python default) to the load balancer.
    provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://127.0.0.1:{lb.ports[4318]}/v1/traces")))
    tracer = provider.get_tracer("k8s-tier")
    with tracer.start_as_current_span("POST /leads", kind=SpanKind.SERVER) as root:
        with tracer.start_as_current_span("INSERT crm_lead", kind=SpanKind.CLIENT):
            pass
        root.set_status(Status(StatusCode.ERROR, "boom"))
    trace_id = f"{root.get_span_context().trace_id:032x}"
    provider.shutdown()

    wait_until(lambda: len([s for s in jaeger.spans() if s.trace_id == trace_id]) == 2, 30,
               "the error trace (both spans) through load balancer and sampler")
    lb_metrics = parse_prometheus(lb.self_metrics())
    assert metric_sum(lb_metrics, "otelcol_loadbalancer_num_resolutions", resolver="dns") > 0, \
        "the load balancer resolved its backends with the DNS resolver"
    assert metric_sum(lb_metrics, "otelcol_loadbalancer_num_backends", resolver="dns") == 1

    # The sampler's RED metrics (span_metrics) are served where the values put the Prometheus endpoint.
    def red_metrics() -> bool:
        body = http_get(f"http://127.0.0.1:{sampler.ports[8889]}/metrics")[1].decode()
        return "k8s-tier-test" in body
    wait_until(red_metrics, 30, "span metrics on the sampler's Prometheus endpoint")
