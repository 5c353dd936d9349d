"""The cardinality guard: every request-derived metric attribute within its budget, overflow counted.

The scanner test drives the Flask example in-process (Flask test client, the real Flask
instrumentation, otel_crm's real processors with in-memory readers).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import otel_crm
from otel_crm._internal import semconv
from otel_crm._internal.cardinality import OTHER, CardinalityGuard
from otel_crm.testing import capture_telemetry

GUARDED = {attribute for attributes in semconv.GUARDED_METRIC_ATTRIBUTES.values() for attribute in attributes}


def test_each_attribute_has_its_own_budget_per_metric_and_overflow_is_reported() -> None:
    overflows: list[tuple[str, str]] = []
    guard = CardinalityGuard({"a": 2, "b": 1}, on_overflow=lambda m, k: overflows.append((m, k)))
    assert [guard.bound("m", "a", v) for v in ("x", "y", "z", "x")] == ["x", "y", OTHER, "x"]
    assert [guard.bound("m", "b", v) for v in ("x", "y")] == ["x", OTHER]
    assert guard.bound("other", "a", "z") == "z"  # budgets are per metric
    assert guard.bound("m", "unguarded", "anything") == "anything"
    assert overflows == [("m", "a"), ("m", "b")]


def test_outgoing_form_is_computed_once_per_admitted_value_and_never_for_an_overflow() -> None:
    calls: list[str] = []

    def outgoing(attribute: str, value: str) -> str:
        calls.append(value)
        return value.upper()

    guard = CardinalityGuard({"a": 1}, outgoing=outgoing)
    assert [guard.bound("m", "a", v) for v in ("x", "x", "y", "y")] == ["X", "X", OTHER, OTHER]
    assert calls == ["x"]


def test_allow_listed_values_keep_their_form_without_using_the_budget() -> None:
    guard = CardinalityGuard({"t": 1}, {"t": ["vip"]})
    assert [guard.bound("m", "t", v) for v in ("vip", "a", "b", "vip")] == ["vip", "a", OTHER, "vip"]


def test_a_forked_child_starts_with_fresh_budgets() -> None:
    guard = CardinalityGuard({"a": 1})
    assert guard.bound("m", "a", "x") == "x" and guard.bound("m", "a", "y") == OTHER
    guard.after_fork()
    assert guard.bound("m", "a", "y") == "y"


def test_consistent_under_threads() -> None:
    guard = CardinalityGuard({"a": 10})
    with ThreadPoolExecutor(8) as pool:
        labels = list(pool.map(lambda i: guard.bound("m", "a", f"v{i % 100}"), range(20_000)))
    assert len(set(labels) - {OTHER}) == 10


def test_every_settings_group_feeds_its_attributes_budget() -> None:
    with capture_telemetry(operation_metric_limit=3, connector_metric_limit=4, workflow_metric_limit=5,
                           model_metric_limit=6, index_metric_limit=7, tenant_metric_limit=8) as telemetry:
        guard = telemetry.runtime.cardinality
        assert guard is not None
        expected = {"operation": 3, "connector": 4, "workflow": 5, "model": 6, "index": 7, "tenant": 8}
        for group, attributes in semconv.GUARDED_METRIC_ATTRIBUTES.items():
            for attribute in attributes:
                assert guard.budget(attribute) == expected[group], attribute


def test_helper_metrics_are_bounded_scrubbed_and_overflow_is_counted() -> None:
    with capture_telemetry(workflow_metric_limit=3, index_metric_limit=2) as telemetry:
        for i in range(10):
            with otel_crm.workflow(f"import-{i}"):
                pass
            with otel_crm.search_query(f"leads_{i}"):
                pass
        workflows = {p.attributes[semconv.CRM_WORKFLOW_NAME]
                     for p in telemetry.metric_points(semconv.CRM_WORKFLOW_EXECUTIONS)}
        assert workflows == {"import-0", "import-1", "import-2", OTHER}
        indexes = {p.attributes[semconv.DB_COLLECTION_NAME]
                   for p in telemetry.metric_points(semconv.DB_CLIENT_OPERATION_DURATION)}
        assert indexes == {"leads_0", "leads_1", OTHER}
        assert telemetry.metric_sum(semconv.CRM_METRIC_OVERFLOW, crm__metric__name=semconv.CRM_WORKFLOW_DURATION,
                                    crm__metric__attribute=semconv.CRM_WORKFLOW_NAME) == 7


def test_an_entry_span_operation_is_scrubbed_on_the_metric() -> None:
    with capture_telemetry() as telemetry:
        tracer = telemetry.runtime.tracer("test")
        with tracer.start_as_current_span("notify jane@example.com"):
            pass
        operations = {p.attributes[semconv.CRM_OPERATION_NAME] for p in telemetry.metric_points(semconv.CRM_REQUESTS)}
        assert operations == {"notify [REDACTED:email]"}


class _NullExporter(SpanExporter):
    """Keeps nothing: the memory measured is the metrics', not a test exporter's list."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


SCANNER_PATHS = 5000
LIMITS = {"operation_metric_limit": 20, "tenant_metric_limit": 20, "connector_metric_limit": 20,
          "workflow_metric_limit": 20, "model_metric_limit": 20, "index_metric_limit": 20}


def _series(points: list[Any]) -> dict[str, set[Any]]:
    values: dict[str, set[Any]] = defaultdict(set)
    for point in points:
        for key, value in point.attributes.items():
            values[key].add(value)
    return values


def test_a_scanner_cannot_grow_the_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 distinct unmatched paths (one carrying URL credentials) through the Flask example:
    every otel_crm metric stays within its budgets, no path reaches a metric, memory stays flat."""
    flask_instrumentation = pytest.importorskip("opentelemetry.instrumentation.flask")
    from examples.flask_crm.app import create_app

    with capture_telemetry(span_exporter=_NullExporter(), **LIMITS) as telemetry:
        app = create_app("sqlite://", services_url="http://127.0.0.1:9")
        flask_instrumentation.FlaskInstrumentor().instrument_app(
            app, tracer_provider=telemetry.runtime.tracer_provider, meter_provider=telemetry.runtime.meter_provider)
        try:
            client = app.test_client()
            assert client.get("/health").status_code == 200
            assert client.get("/x/https://admin:hunter2@db.example.com/y").status_code == 404
            warm_up = 500
            for i in range(warm_up):
                client.get(f"/scan/{i}/wp-login.php?id={i}")
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            for i in range(warm_up, SCANNER_PATHS):
                client.get(f"/scan/{i}/wp-login.php?id={i}")
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
        finally:
            flask_instrumentation.FlaskInstrumentor().uninstrument_app(app)
        growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        # 4,500 requests: the upstream SDK + otel_crm hold no per-path state (1 MB is the noise floor:
        # interned strings, caches reaching their cap, the allocator).
        assert growth < 1_000_000, growth
        requests = telemetry.metric_points(semconv.CRM_REQUESTS)
        assert sum(p.value for p in requests) == SCANNER_PATHS + 2
        operations = _series(requests)[semconv.CRM_OPERATION_NAME]
        assert operations == {"GET /health", "GET"}, "an unrouted request is recorded under its method"
        names = [name for name in telemetry._units if name.startswith("crm.")]
        assert {semconv.CRM_REQUESTS, semconv.CRM_REQUEST_DURATION} <= set(names)
        for name in names:
            points = telemetry.metric_points(name)
            assert len(points) <= 25, (name, len(points))  # at most a budget's worth of series
            for key, values in _series(points).items():
                assert len(values) <= LIMITS["operation_metric_limit"] + 1, (name, key)
            for point in points:
                assert "hunter2" not in str(point.attributes) and "/scan/" not in str(point.attributes)
