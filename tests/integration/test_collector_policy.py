"""`otel-crm collector-policy`'s output run by the real collector (otelcol-crm): spans sent over OTLP as a
`collector`-mode service sends them, tail-sampled by the generated policies, written to a file. Which
trace ids are kept is predicted exactly, the collector's FNV-1a hash included (docs/sampling.md)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Status, StatusCode

from otel_crm._internal.collector_policy import collector_policies, render_policies
from otel_crm._internal.sampling import compile_rules
from tests.conftest import otelcol_binary
from tests.support.otlp_files import read_spans
from tests.support.processes import ManagedProcess, free_port, http_ok, tcp_open, wait_until

pytestmark = pytest.mark.integration

RULES = [{"name": "health", "route": "/health*", "ratio": 0, "errors": False},
         {"name": "vip", "tenant": "vip-*", "ratio": 1},
         {"route": "/webhooks/*", "ratio": 0.01},
         {"name": "dotted", "route": "/api/v1.0/*", "ratio": 1}]
S = 1_000_000_000
T0 = 1_700_000_000 * S
CONFIG = """receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${env:TEST_OTLP_GRPC_PORT}
processors:
  tail_sampling:
    decision_wait: 1s
    num_traces: 10000
    decision_cache:
      sampled_cache_size: 10000
      non_sampled_cache_size: 10000
%s
exporters:
  file/traces:
    path: ${env:TEST_OUTPUT_DIR}/traces.jsonl
    flush_interval: 100ms
extensions:
  health_check:
    endpoint: 127.0.0.1:${env:TEST_HEALTH_PORT}
service:
  extensions: [health_check]
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [tail_sampling]
      exporters: [file/traces]
"""


def collector_keeps(trace_id: int, percent: float, salt: str = "default-hash-seed") -> bool:
    """The collector's probabilistic policy: FNV-1a 64 of salt + trace id <= MaxUint64 x ratio."""
    value = 0xCBF29CE484222325
    for byte in salt.encode() + trace_id.to_bytes(16, "big"):
        value = ((value ^ byte) * 0x100000001B3) & (2**64 - 1)
    return value <= int((2**64 - 1) * Fraction(percent / 100))


class Ids(IdGenerator):
    def __init__(self) -> None:
        self._random = random.Random(11)
        self.next = 0

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        self.next = self._random.getrandbits(128) or 1
        return self.next


Keep = bool | Callable[[int], bool]


@dataclass
class Sent:
    provider: TracerProvider
    ids: Ids
    expected: set[str]
    leads_ok: list[int] = field(default_factory=list)

    def trace(self, keep: Keep, route: str, *, tenant: str = "acme", seconds: float = 0.05,
              error: bool = False, client_tenant: str | None = None, child_seconds: float = 0.01) -> None:
        """One trace: a SERVER root and a child; `keep` says (or computes from the trace id) if it is kept."""
        tracer = self.provider.get_tracer("t")
        attributes = {"http.route": route, "http.request.method": "GET", "crm.tenant.id": tenant}
        root = tracer.start_span(f"GET {route}", kind=trace.SpanKind.SERVER, attributes=attributes, start_time=T0)
        child = tracer.start_span("work", context=trace.set_span_in_context(root), start_time=T0,
                                  kind=trace.SpanKind.CLIENT if client_tenant else trace.SpanKind.INTERNAL,
                                  attributes={"crm.tenant.id": client_tenant or tenant})
        if error:
            child.set_status(Status(StatusCode.ERROR))
        child.end(end_time=T0 + round(child_seconds * S))
        root.end(end_time=T0 + round(seconds * S))
        if route == "/leads" and not error and tenant == "acme" and child_seconds < 1 and client_tenant is None:
            self.leads_ok.append(self.ids.next)
        if keep(self.ids.next) if callable(keep) else keep:
            self.expected.add(f"{self.ids.next:032x}")


@pytest.fixture
def sampler(tmp_path: Path) -> Iterator[tuple[ManagedProcess, int, Path]]:
    policies = render_policies(collector_policies(compile_rules(RULES)[0], ratio=0.1, slow_seconds=2.0), indent=4)
    config = tmp_path / "sampler.yaml"
    config.write_text(CONFIG % policies.rstrip("\n"))
    out = tmp_path / "out"
    out.mkdir()
    grpc, health = free_port(), free_port()
    process = ManagedProcess("otelcol-sampler", [str(otelcol_binary()), "--config", str(config)],
                             env={"TEST_OTLP_GRPC_PORT": str(grpc), "TEST_HEALTH_PORT": str(health),
                                  "TEST_OUTPUT_DIR": str(out)}, log_dir=tmp_path)
    process.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{health}/") and tcp_open(grpc))
    yield process, grpc, out / "traces.jsonl"
    process.stop()


def test_the_real_collector_applies_the_generated_policies(sampler: tuple[ManagedProcess, int, Path]) -> None:
    process, port, output = sampler
    ids = Ids()
    provider = TracerProvider(resource=Resource({"service.name": "crm"}), id_generator=ids, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}",
                                                                    insecure=True)))
    sent = Sent(provider, ids, set())
    for _ in range(30):  # health checks: ratio 0, whatever the hash says
        sent.trace(False, "/health")
    for _ in range(10):  # errors: false
        sent.trace(False, "/health/live", error=True)
    for _ in range(3):  # slow: still true for health
        sent.trace(True, "/health", seconds=3.0)
    for _ in range(20):  # vip: ratio 1
        sent.trace(True, "/leads", tenant="vip-1")
    for _ in range(10):  # an error on any span of the trace
        sent.trace(True, "/leads", error=True)
    for _ in range(5):  # latency: earliest start to latest end (the child outlives the 0.05 s root)
        sent.trace(True, "/leads", child_seconds=3.0)
    for _ in range(20):  # a vip tenant only on an outgoing CLIENT span does not match: the default 10%
        sent.trace(lambda trace_id: collector_keeps(trace_id, 10), "/leads", client_tenant="vip-2")
    for _ in range(300):  # rule3: 1%, by the collector's hash
        sent.trace(lambda trace_id: collector_keeps(trace_id, 1), "/webhooks/stripe")
    for _ in range(10):  # a dot in a glob is a dot (escaped for RE2, through OTTL's string literal)
        sent.trace(True, "/api/v1.0/leads")
    for _ in range(30):
        sent.trace(lambda trace_id: collector_keeps(trace_id, 10), "/api/v1x0/leads")
    for _ in range(300):  # no rule: the default 10%, by the collector's hash
        sent.trace(lambda trace_id: collector_keeps(trace_id, 10), "/leads")
    provider.force_flush()
    sent.trace(True, "/leads", tenant="vip-marker")  # sent last: once it is out, everything was decided
    provider.force_flush()
    provider.shutdown()

    def kept() -> set[str]:
        return {s.trace_id for s in read_spans(output)}

    wait_until(lambda: kept() >= sent.expected, 30, f"{len(sent.expected)} kept traces in the collector output")
    assert kept() == sent.expected, process.output()[-2000:]
    # The same 10%, a different set of trace ids than the SDK's TraceIdRatioBased rule keeps.
    sdk = {t for t in sent.leads_ok if t & (2**64 - 1) < round(0.1 * 2**64)}
    ours = {t for t in sent.leads_ok if collector_keeps(t, 10)}
    assert len(sent.leads_ok) == 300 and sdk != ours and 10 <= len(ours) <= 55
    by_route = {s.attributes.get("http.route") for s in read_spans(output) if s.parent_span_id == ""}
    assert "/health/live" not in by_route

