"""Overhead of the business helpers vs hand-written OpenTelemetry code doing the same work.

Each helper is measured against a "raw" arm: ``tracer.start_as_current_span`` with the same span
name, kind and attributes, and the same metric recordings (same instruments, same attributes).
Both arms share one SDK TracerProvider (BatchSpanProcessor into a discarding exporter) and one
MeterProvider. Arms are interleaved in random order within each round; we report medians over
rounds. Goal: helper / raw <= 1.1.

    .venv/bin/python bench/bench_helpers.py            # writes docs/bench-helpers.md
    .venv/bin/python bench/bench_helpers.py --quick    # fewer rounds, prints only
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import opentelemetry.sdk
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind

from otel_crm._internal import semconv
from otel_crm._internal.runtime import Runtime, clear_current_runtime, set_current_runtime
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import TenantLabeler
from otel_crm.helpers import (
    agent_invocation,
    connector_operation,
    instrument_sync_operation,
    sanitize_query,
    search_query,
    workflow,
)
from otel_crm.helpers.pricing import load_price_table

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.1
DSL = {"query": {"bool": {"must": [{"match": {"email": "alice@example.com"}}],
                          "filter": {"terms": {"stage": ["lead", "mql"]}}}}, "size": 20}


class _Discard(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _runtime(sampled: bool) -> Runtime:
    provider = TracerProvider(sampler=None if sampled else ALWAYS_OFF)
    provider.add_span_processor(BatchSpanProcessor(_Discard(), max_queue_size=100_000))
    return Runtime(settings=resolve_settings({}), tracer_provider=provider,
                         meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
                         cardinality=TenantLabeler(100))


def _arms(runtime: Runtime) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    """name -> (helper arm, raw arm). Both do one operation per call."""
    tracer = runtime.tracer()
    meter = runtime.meter("bench.raw")
    buckets = list(semconv.CRM_DURATION_BUCKETS)
    wf_duration = meter.create_histogram(semconv.CRM_WORKFLOW_DURATION, unit="s",
                                         explicit_bucket_boundaries_advisory=buckets)
    wf_executions = meter.create_counter(semconv.CRM_WORKFLOW_EXECUTIONS, unit="{execution}")
    co_duration = meter.create_histogram(semconv.CRM_CONNECTOR_DURATION, unit="s",
                                         explicit_bucket_boundaries_advisory=buckets)
    co_operations = meter.create_counter(semconv.CRM_CONNECTOR_OPERATIONS, unit="{operation}")
    co_records = meter.create_counter(semconv.CRM_CONNECTOR_RECORDS_SYNCED, unit="{record}")
    ai_duration = meter.create_histogram(
        semconv.GEN_AI_CLIENT_OPERATION_DURATION, unit="s",
        explicit_bucket_boundaries_advisory=list(semconv.GEN_AI_DURATION_BUCKETS))
    ai_tokens = meter.create_histogram(
        semconv.GEN_AI_CLIENT_TOKEN_USAGE, unit="{token}",
        explicit_bucket_boundaries_advisory=list(semconv.GEN_AI_TOKEN_BUCKETS))
    ai_cost = meter.create_counter(semconv.CRM_GEN_AI_COST, unit="{USD}")
    db_duration = meter.create_histogram(
        semconv.DB_CLIENT_OPERATION_DURATION, unit="s",
        explicit_bucket_boundaries_advisory=list(semconv.DB_CLIENT_OPERATION_DURATION_BUCKETS))
    prices = load_price_table()

    # --- workflow ----------------------------------------------------------------------------------
    def workflow_helper() -> None:
        with workflow("enrich_lead", execution_id="run-1", trigger="api"):
            pass

    def workflow_raw() -> None:
        t0 = time.perf_counter()
        with tracer.start_as_current_span(
                "execute_workflow enrich_lead", kind=SpanKind.INTERNAL,
                attributes={semconv.CRM_WORKFLOW_NAME: "enrich_lead",
                            semconv.CRM_WORKFLOW_EXECUTION_ID: "run-1",
                            semconv.CRM_WORKFLOW_TRIGGER: "api"}) as span:
            span.set_attribute(semconv.CRM_WORKFLOW_ACTIONS, 0)
        attributes = {semconv.CRM_WORKFLOW_NAME: "enrich_lead", semconv.CRM_WORKFLOW_OUTCOME: "success"}
        wf_duration.record(time.perf_counter() - t0, attributes)
        wf_executions.add(1, attributes)

    @workflow("enrich_lead")
    def decorated() -> int:
        return 1

    def decorated_helper() -> None:
        decorated()

    def decorator_raw() -> None:
        t0 = time.perf_counter()
        with tracer.start_as_current_span(
                "execute_workflow enrich_lead", kind=SpanKind.INTERNAL,
                attributes={semconv.CRM_WORKFLOW_NAME: "enrich_lead",
                            semconv.CODE_FUNCTION_NAME: "bench.decorated"}) as span:
            span.set_attribute(semconv.CRM_WORKFLOW_ACTIONS, 0)
        attributes = {semconv.CRM_WORKFLOW_NAME: "enrich_lead", semconv.CRM_WORKFLOW_OUTCOME: "success"}
        wf_duration.record(time.perf_counter() - t0, attributes)
        wf_executions.add(1, attributes)

    # --- connector ---------------------------------------------------------------------------------
    def connector_helper() -> None:
        with connector_operation("hubspot", "sync", resource_type="contacts") as op:
            op.set_records(25)

    def connector_raw() -> None:
        t0 = time.perf_counter()
        with tracer.start_as_current_span(
                "sync hubspot", kind=SpanKind.INTERNAL,
                attributes={semconv.SERVICE_PEER_NAME: "hubspot", semconv.CRM_CONNECTOR_OPERATION: "sync",
                            semconv.CRM_CONNECTOR_RESOURCE_TYPE: "contacts"}) as span:
            span.set_attribute(semconv.CRM_CONNECTOR_RECORDS, 25)
        base = {semconv.SERVICE_PEER_NAME: "hubspot", semconv.CRM_CONNECTOR_OPERATION: "sync",
                semconv.CRM_CONNECTOR_RESOURCE_TYPE: "contacts"}
        attributes = {**base, semconv.CRM_CONNECTOR_OUTCOME: "success"}
        co_duration.record(time.perf_counter() - t0, attributes)
        co_operations.add(1, attributes)
        co_records.add(25, base)

    class HubSpotConnector:
        @instrument_sync_operation("contacts")
        def sync_contacts(self) -> list[int]:
            return [1, 2, 3]

    hubspot = HubSpotConnector()

    def connector_decorator_helper() -> None:
        hubspot.sync_contacts()

    def connector_decorator_raw() -> None:
        t0 = time.perf_counter()
        with tracer.start_as_current_span(
                "sync hubspot", kind=SpanKind.INTERNAL,
                attributes={semconv.SERVICE_PEER_NAME: "hubspot", semconv.CRM_CONNECTOR_OPERATION: "sync",
                            semconv.CRM_CONNECTOR_RESOURCE_TYPE: "contacts",
                            semconv.CODE_FUNCTION_NAME: "bench.HubSpotConnector.sync_contacts"}) as span:
            records = len([1, 2, 3])
            span.set_attribute(semconv.CRM_CONNECTOR_RECORDS, records)
        base = {semconv.SERVICE_PEER_NAME: "hubspot", semconv.CRM_CONNECTOR_OPERATION: "sync",
                semconv.CRM_CONNECTOR_RESOURCE_TYPE: "contacts"}
        attributes = {**base, semconv.CRM_CONNECTOR_OUTCOME: "success"}
        co_duration.record(time.perf_counter() - t0, attributes)
        co_operations.add(1, attributes)
        co_records.add(records, base)

    # --- agent -------------------------------------------------------------------------------------
    def agent_helper() -> None:
        with agent_invocation("openai", "gpt-4o") as call:
            call.record_usage(812, 95, response_model="gpt-4o-2024-08-06")

    def agent_raw() -> None:
        t0 = time.perf_counter()
        with tracer.start_as_current_span(
                "chat gpt-4o", kind=SpanKind.CLIENT,
                attributes={semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_PROVIDER_NAME: "openai",
                            semconv.GEN_AI_REQUEST_MODEL: "gpt-4o"}) as span:
            span.set_attribute(semconv.GEN_AI_RESPONSE_MODEL, "gpt-4o-2024-08-06")
            span.set_attribute(semconv.GEN_AI_USAGE_INPUT_TOKENS, 812)
            span.set_attribute(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, 95)
            cost = prices.cost("openai", "gpt-4o-2024-08-06", 812, 95)
            span.set_attribute(semconv.CRM_GEN_AI_COST_AMOUNT, cost or 0.0)
            span.set_attribute(semconv.CRM_GEN_AI_COST_CURRENCY, "USD")
        base = {semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_PROVIDER_NAME: "openai",
                semconv.GEN_AI_REQUEST_MODEL: "gpt-4o", semconv.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06"}
        ai_duration.record(time.perf_counter() - t0, base)
        ai_tokens.record(812, {**base, semconv.GEN_AI_TOKEN_TYPE: "input"})
        ai_tokens.record(95, {**base, semconv.GEN_AI_TOKEN_TYPE: "output"})
        ai_cost.add(cost or 0.0, {**base, semconv.CRM_GEN_AI_COST_CURRENCY: "USD"})

    # --- search ------------------------------------------------------------------------------------
    def search_helper() -> None:
        with search_query("leads", query=DSL) as search:
            search.set_results(12)

    def search_raw() -> None:
        t0 = time.perf_counter()
        with tracer.start_as_current_span(
                "search leads", kind=SpanKind.CLIENT,
                attributes={semconv.DB_SYSTEM_NAME: "elasticsearch", semconv.DB_OPERATION_NAME: "search",
                            semconv.DB_COLLECTION_NAME: "leads"}) as span:
            if span.is_recording():  # careful hand-written code skips span-only work too
                span.set_attribute(semconv.DB_QUERY_TEXT, sanitize_query(DSL))
            span.set_attribute(semconv.DB_RESPONSE_RETURNED_ROWS, 12)
        db_duration.record(time.perf_counter() - t0, {
            semconv.DB_SYSTEM_NAME: "elasticsearch", semconv.DB_OPERATION_NAME: "search",
            semconv.DB_COLLECTION_NAME: "leads"})

    return {
        "workflow (with)": (workflow_helper, workflow_raw),
        "workflow (decorator)": (decorated_helper, decorator_raw),
        "connector_operation (with)": (connector_helper, connector_raw),
        "instrument_sync_operation": (connector_decorator_helper, connector_decorator_raw),
        "agent_invocation": (agent_helper, agent_raw),
        "search_query (DSL)": (search_helper, search_raw),
    }


def _time(function: Callable[[], None], n: int) -> float:
    """µs of this thread's CPU per call: immune to other processes on a shared machine (wall-clock
    time there mostly measures the scheduler). The span export thread is excluded for both arms."""
    start = time.thread_time()
    for _ in range(n):
        function()
    return (time.thread_time() - start) / n * 1e6


def measure(sampled: bool, rounds: int, n: int) -> list[tuple[str, float, float]]:
    runtime = _runtime(sampled)
    previous = set_current_runtime(runtime)
    try:
        arms = _arms(runtime)
        flat = [(name, which, fn)
                for name, pair in arms.items() for which, fn in zip((0, 1), pair, strict=True)]
        for _, _, fn in flat:  # warm up: instruments, caches, memo
            _time(fn, 200)
        samples: dict[tuple[str, int], list[float]] = {(name, which): [] for name, which, _ in flat}
        rng = random.Random(7)
        for _ in range(rounds):
            rng.shuffle(flat)
            for name, which, fn in flat:
                samples[(name, which)].append(_time(fn, n))
            runtime.tracer_provider.force_flush()
        return [(name, statistics.median(samples[(name, 0)]), statistics.median(samples[(name, 1)]))
                for name in arms]
    finally:
        runtime.tracer_provider.shutdown()
        set_current_runtime(previous) if previous is not None else clear_current_runtime()


def _table(rows: list[tuple[str, float, float]]) -> list[str]:
    lines = ["| helper | helper µs/op | raw µs/op | ratio |", "|---|---:|---:|---:|"]
    for name, helper, raw in rows:
        mark = "" if helper / raw <= GOAL else " ⚠"
        lines.append(f"| {name} | {helper:.1f} | {raw:.1f} | {helper / raw:.2f}x{mark} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds; print, don't write docs")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("-n", type=int, default=400, help="operations per arm per round")
    options = parser.parse_args(argv)
    rounds, n = (7, 300) if options.quick else (options.rounds, options.n)

    sampled = measure(True, rounds, n)
    unsampled = measure(False, rounds, n)
    worst = max(h / r for _, h, r in sampled)
    lines = [
        "# Business helpers: overhead vs hand-written OpenTelemetry",
        "",
        "Each helper against a raw `tracer.start_as_current_span` with the same name, kind and",
        "attributes and the same metric recordings (same instruments and attributes), sharing one SDK",
        "TracerProvider (BatchSpanProcessor into a discarding exporter) and one MeterProvider. Arms are",
        f"interleaved in random order; medians of {rounds} rounds x {n} operations. Goal: ≤ {GOAL}x.",
        "Times are the calling thread's CPU time per operation (`time.thread_time`): the machine is",
        "shared, and wall-clock time there mostly measures the scheduler "
        f"(load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs).",
        "",
        "## Sampled (always on)",
        "",
        *_table(sampled),
        "",
        "## Not sampled (ALWAYS_OFF head sampler: spans not recording, metrics still recorded)",
        "",
        *_table(unsampled),
        "",
        f"Worst sampled ratio: {worst:.2f}x ({'meets' if worst <= GOAL else 'misses'} the {GOAL}x goal).",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, "
        f"opentelemetry-sdk {opentelemetry.sdk.version.__version__}.",
        "",
        "Reproduce: `.venv/bin/python bench/bench_helpers.py` (rewrites this file; `--quick` only prints).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not options.quick:
        (ROOT / "docs" / "bench-helpers.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    trace.get_tracer_provider()  # keep the global provider untouched: both arms use the runtime's
    sys.exit(main())
