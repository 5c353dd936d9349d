"""Build traces with the plain OpenTelemetry Python SDK (no otel_crm code) for the e2e tests."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode


class ChosenTraceIds(IdGenerator):
    """Root spans get the next queued trace id (so the test knows the collector's decision)."""

    def __init__(self) -> None:
        self._queue: list[int] = []
        self._random = RandomIdGenerator()

    def use(self, trace_id: int) -> None:
        self._queue.append(trace_id)

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        return self._queue.pop(0) if self._queue else self._random.generate_trace_id()


def make_provider(service: str, otlp_endpoint: str, ids: IdGenerator | None = None) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}), sampler=ALWAYS_ON,
                              id_generator=ids or RandomIdGenerator())
    exporter = OTLPSpanExporter(endpoint=f"http://{otlp_endpoint}", insecure=True, timeout=10)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100, max_export_batch_size=256))
    return provider


def emit_trace(tracer: trace.Tracer, *, error: bool = False, duration_s: float = 0.05,
               attributes: dict[str, Any] | None = None) -> tuple[int, dict[str, int | None]]:
    """root (SERVER) → handler (INTERNAL) → db (CLIENT), with explicit timestamps (no sleeping).

    Returns (trace_id, {span name: parent span id or None}). `error` puts ERROR on the
    innermost span only: the collector's status_code policy matches any errored span.
    """
    t0 = time.time_ns()
    end = t0 + int(duration_s * 1e9)
    root = tracer.start_span("POST /api/deals", kind=SpanKind.SERVER, start_time=t0, attributes=attributes or {})
    ctx = trace.set_span_in_context(root)
    handler = tracer.start_span("create_deal", context=ctx, start_time=t0 + 1_000)
    db = tracer.start_span("INSERT crm.deals", kind=SpanKind.CLIENT, context=trace.set_span_in_context(handler),
                           start_time=t0 + 2_000)
    if error:
        db.set_status(Status(StatusCode.ERROR, "unique violation"))
    db.end(end_time=end - 2_000)
    handler.end(end_time=end - 1_000)
    root.end(end_time=end)
    rid, hid = root.get_span_context().span_id, handler.get_span_context().span_id
    return root.get_span_context().trace_id, {"POST /api/deals": None, "create_deal": rid, "INSERT crm.deals": hid}


def jaeger_parents(jtrace: dict[str, Any]) -> dict[str, int | None]:
    """{operationName: parent span id (int) or None} from a Jaeger API trace."""
    out: dict[str, int | None] = {}
    for span in jtrace["spans"]:
        refs = [r for r in span.get("references") or [] if r["refType"] == "CHILD_OF"]
        out[span["operationName"]] = int(refs[0]["spanID"], 16) if refs else None
    return out


def jaeger_span_ids(jtrace: dict[str, Any]) -> dict[str, int]:
    return {s["operationName"]: int(s["spanID"], 16) for s in jtrace["spans"]}


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span.get("tags") or []}


def all_trace_ids(traces: Iterable[dict[str, Any]]) -> set[int]:
    return {int(t["traceID"], 16) for t in traces}
