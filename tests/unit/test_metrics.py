"""Metrics: advised buckets, and a pipeline a forked child can always export from."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from otel_crm._internal import semconv
from otel_crm._internal.metrics import restart_after_fork, semconv_views
from tests.unit.test_exporters import fork_only, in_child


class Recording(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exported: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def counter_values(exported: Sequence[MetricsData], name: str) -> list[float]:
    return [point.value for data in exported for rm in data.resource_metrics for sm in rm.scope_metrics
            for metric in sm.metrics if metric.name == name for point in metric.data.data_points]


def test_http_duration_uses_the_advised_second_buckets() -> None:
    views = {view._instrument_name: view for view in semconv_views()}
    buckets = views[semconv.HTTP_SERVER_REQUEST_DURATION]._aggregation._boundaries
    assert list(buckets) == [float(b) for b in semconv.HTTP_DURATION_BUCKETS]
    assert buckets[0] < 0.01 and buckets[-1] <= 10, "seconds, not milliseconds"


@fork_only
@pytest.mark.parametrize("held", ["collection", "export"])
def test_child_forked_while_a_parent_thread_holds_the_pipeline_still_exports(held: str) -> None:
    exporter = Recording()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    counter = provider.get_meter("t").create_counter("orders")
    counter.add(2)  # the parent's count: not the child's
    lock = provider._measurement_consumer._lock if held == "collection" else reader._export_lock
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:  # a reader thread caught in the middle of its work at fork time
        with lock:
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert holding.wait(5)

    def child() -> str:
        restart_after_fork(provider)
        counter.add(5)
        finished = threading.Event()
        threading.Thread(target=lambda: (provider.force_flush(2_000), finished.set()), daemon=True).start()
        if not finished.wait(3):
            return "hung"
        return repr(counter_values(exporter.exported, "orders"))

    try:
        assert in_child(child) == "[5]"
    finally:
        release.set()
        thread.join()
        provider.shutdown()


@fork_only
def test_observable_callbacks_survive_the_restart() -> None:
    exporter = Recording()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    from opentelemetry.metrics import Observation

    provider.get_meter("t").create_observable_gauge("pool.size", callbacks=[lambda _: [Observation(7)]])

    def child() -> str:
        restart_after_fork(provider)
        provider.force_flush(2_000)
        return repr(counter_values(exporter.exported, "pool.size"))

    try:
        assert in_child(child) == "[7]"
    finally:
        provider.shutdown()


@fork_only
def test_a_reader_added_after_setup_still_exports_in_the_child() -> None:
    exporter = Recording()
    provider = MeterProvider(metric_readers=[], shutdown_on_exit=False)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider.add_metric_reader(reader)
    counter = provider.get_meter("t").create_counter("orders")

    def child() -> str:
        restart_after_fork(provider)
        counter.add(4)
        reader.collect()  # the provider's force_flush only knows the readers it was built with
        return repr(counter_values(exporter.exported, "orders"))

    try:
        assert in_child(child) == "[4]"
    finally:
        provider.shutdown()
