"""The bundled collector keeps every trace an otel_crm service already sampled in process.

otel_crm puts `crm.sampling.mode` on its resource; collector-config/otelcol.yaml's `decided-in-process`
policy keeps traces from `tail`, `head` and `off` services and samples only `collector`-mode ones at its
baseline. Without it, `OTEL_CRM_SAMPLING_MODE=off` would still lose 90% of ok traces at the collector,
and a head-sampled 10% would become 1%. Judged by the real collector in front of the real Jaeger, with
trace ids the collector's baseline (FNV-1a, computed here) would drop.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from otel_crm._internal.resource import create_resource
from otel_crm._internal.settings import resolve_settings
from tests.e2e.stack import CONFIGS, CollectorProc, JaegerProc, ids_by_decision, poll
from tests.e2e.traces import ChosenTraceIds, all_trace_ids, emit_trace

pytestmark = pytest.mark.e2e

N_DROPPED_BY_BASELINE, N_KEPT_BY_BASELINE = 12, 3


def _send(mode: str, service: str, endpoint: str, trace_ids: list[int]) -> None:
    ids = ChosenTraceIds()
    resource = create_resource(resolve_settings({"OTEL_CRM_SAMPLING_MODE": mode, "OTEL_SERVICE_NAME": service}))
    provider = TracerProvider(resource=resource, sampler=ALWAYS_ON, id_generator=ids)
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=10), schedule_delay_millis=100))
    tracer = provider.get_tracer("e2e")
    for trace_id in trace_ids:
        ids.use(trace_id)
        emit_trace(tracer, duration_s=0.02)  # ok and fast: only the baseline or decided-in-process keeps it
    assert provider.force_flush(10_000)
    provider.shutdown()


def test_off_and_head_mode_traces_are_all_kept_and_collector_mode_is_sampled(
        jaeger: JaegerProc, tmp_path: Path) -> None:
    collector = CollectorProc(tmp_path, CONFIGS / "otelcol.yaml", extra_env={
        "JAEGER_OTLP_ENDPOINT": jaeger.otlp_endpoint, "OTELCOL_DECISION_WAIT": "1s",
        "OTELCOL_BATCH_TIMEOUT": "200ms"}).start()
    try:
        rng = random.Random(20261130)
        tag = f"{rng.getrandbits(32):08x}"
        kept, dropped = ids_by_decision(rng, N_KEPT_BY_BASELINE, 3 * N_DROPPED_BY_BASELINE)
        by_mode = {"off": dropped[:N_DROPPED_BY_BASELINE],
                   "head": dropped[N_DROPPED_BY_BASELINE:2 * N_DROPPED_BY_BASELINE],
                   # dropped first, then the ones the baseline keeps: once those arrived, the
                   # dropped ones (decided earlier) would have, too
                   "collector": dropped[2 * N_DROPPED_BY_BASELINE:] + kept}
        services = {mode: f"crm-e2e-decided-{mode}-{tag}" for mode in by_mode}
        for mode, trace_ids in by_mode.items():
            _send(mode, services[mode], collector.grpc_endpoint, trace_ids)

        def arrived(mode: str) -> set[int]:
            return all_trace_ids(jaeger.traces(services[mode]))

        poll(lambda: arrived("collector") >= set(kept), 30, "the collector-mode traces the baseline keeps")
        for mode in ("off", "head"):
            got = poll(lambda m=mode: arrived(m) >= set(by_mode[m]) and arrived(m), 30,  # type: ignore[misc]
                       f"every {mode}-mode trace in Jaeger")
            assert got == set(by_mode[mode])
        assert arrived("collector") == set(kept), "collector mode: the baseline samples (the control)"
    finally:
        collector.stop()
