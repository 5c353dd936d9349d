"""Spans to OTLP bytes: upstream's `encode_spans(...).SerializeToString()` against otel_crm's
(otlp_spans.py), per span; and the SQLAlchemy pool's checkout + checkin with upstream's recordings
against otel_crm's one transfer each (integrations/sqlalchemy_fast.py). Prints, writes nothing.

    .venv/bin/python bench/otlp_encode_micro.py [--rounds 7]

One process, arms interleaved (order alternating per round), best of 3 timeit repeats per round,
medians over the rounds. The spans are a Flask request's as otel_crm exports them: a server span
with the twelve request attributes, a connect span and two SQL statement spans, on a resource of
eight attributes (100 requests: 400 spans per batch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_crm._internal.otlp_spans import encode_spans_bytes

_SERVER = {"http.request.method": "GET", "url.scheme": "http", "server.address": "127.0.0.1", "server.port": 5000,
           "network.protocol.version": "1.1", "url.path": "/leads", "client.address": "127.0.0.1",
           "client.port": 54321, "user_agent.original": "python-http/1.0", "http.route": "/leads",
           "http.response.status_code": 200, "crm.tenant.id": "acme"}
_SQL = {"db.system.name": "sqlite", "db.namespace": "crm.db", "crm.tenant.id": "acme", "db.operation.name": "SELECT",
        "db.query.text": "SELECT leads.id, leads.name FROM leads WHERE leads.tenant = ? LIMIT ?"}


def _spans() -> list[Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({
        "service.name": "crm", "service.version": "1.2", "deployment.environment.name": "prod",
        "telemetry.sdk.name": "opentelemetry", "telemetry.sdk.language": "python", "telemetry.sdk.version": "1.39.0",
        "host.name": "h", "process.pid": 1234}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("opentelemetry.instrumentation.flask", "0.66b1")
    for _ in range(100):
        with tracer.start_as_current_span("GET /leads", kind=SpanKind.SERVER, attributes=_SERVER):
            with tracer.start_as_current_span("connect", kind=SpanKind.CLIENT,
                                              attributes={"db.system.name": "sqlite", "crm.tenant.id": "acme"}):
                pass
            for _ in range(2):
                with tracer.start_as_current_span("SELECT crm.db", kind=SpanKind.CLIENT, attributes=_SQL):
                    pass
    return list(exporter.get_finished_spans())


def _pool_arms() -> dict[str, Callable[[], None]]:
    """Checkout + checkin of an instrumented engine's pooled connection, upstream's hooks and ours."""
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.sdk.metrics import MeterProvider
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    from otel_crm._internal.corrections import CorrectingMeterProvider
    from otel_crm._internal.integrations.sqlalchemy_fast import (
        install_sqlalchemy_fast_path,
        uninstall_sqlalchemy_fast_path,
    )

    arms: dict[str, Callable[[], None]] = {}
    for name, fast in (("upstream", False), ("otel_crm", True)):
        if fast:
            install_sqlalchemy_fast_path()
        engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        # what the instrumentation builds per engine (its listeners are bound at construction)
        counter = CorrectingMeterProvider(MeterProvider()).get_meter("bench").create_up_down_counter(
            "db.client.connections.usage")
        EngineTracer(TracerProvider().get_tracer("bench"), engine, counter)
        engine.raw_connection().close()
        arms[name] = lambda engine=engine: engine.raw_connection().close()  # the pool's checkout, checkin
        uninstall_sqlalchemy_fast_path()
    return arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    spans = _spans()
    assert encode_spans_bytes(spans) == encode_spans(spans).SerializeToString()
    encode = {"upstream": lambda: encode_spans(spans).SerializeToString(),
              "otel_crm": lambda: encode_spans_bytes(spans)}
    pool = _pool_arms()
    results: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        names = ["upstream", "otel_crm"] if round_ % 2 == 0 else ["otel_crm", "upstream"]
        for name in names:
            best = min(timeit.repeat(encode[name], number=5, repeat=3)) / 5 / len(spans) * 1e6
            results.setdefault(("encode, per span", name), []).append(best)
            best = min(timeit.repeat(pool[name], number=5000, repeat=3)) / 5000 * 1e6
            results.setdefault(("pool checkout + checkin", name), []).append(best)
    print("| operation | upstream µs | otel_crm µs | otel_crm / upstream |")
    print("| --- | ---: | ---: | ---: |")
    for operation in ("encode, per span", "pool checkout + checkin"):
        upstream = statistics.median(results[(operation, "upstream")])
        ours = statistics.median(results[(operation, "otel_crm")])
        print(f"| {operation} | {upstream:.2f} | {ours:.2f} | {ours / upstream:.2f}x |")


if __name__ == "__main__":
    main()
