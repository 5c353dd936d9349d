"""A scanner against the real thing: 5,000 distinct unmatched paths, each with its own X-Tenant-ID,
sent to the Flask example under the real `opentelemetry-instrument`, exporting to the real
collector. Every otel_crm metric stays within its budgets (read from the collector's metrics
file), the overflow is counted in `crm.metric.overflow`, no path reaches a metric, and the app's
resident memory (VmRSS) stays nearly flat. (The in-process version: tests/unit/test_cardinality.py.)
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import App, Collector, flask_app, instrumented_env, wait_until
from tests.support.otlp_files import DataPoint

pytestmark = pytest.mark.integration

SCANNER_PATHS = 5000
WARM_UP = 500
TENANT_LIMIT = 50
OPERATION_LIMIT = 20
CREDENTIALS = "/x/https://admin:hunter2@db.example.com/y"
# Measured: +2.2 MB of VmRSS over the last 4,500 requests (allocator and cache noise, the upstream
# instrumentation's own metrics included). The same scan with no tenant budget (limit 100,000):
# +24.7 MB and 5,000 series per RED metric; issue #9 measured +47 MB before the guard and the
# method-only name. 10 MB sits between the two with room for a busy machine.
RSS_GROWTH_BOUND_KB = 10_000


def _rss_kb(app: App) -> int:
    for line in Path(f"/proc/{app.process.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _scan(app: App, numbers: range, threads: int = 4) -> None:
    def run(chunk: range) -> list[int]:
        with requests.Session() as session:
            return [session.get(app.url(f"/scan/{i}/wp-login.php?id={i}"), timeout=30,
                                headers={"X-Tenant-ID": f"scan-tenant-{i}"}).status_code for i in chunk]

    with ThreadPoolExecutor(threads) as pool:
        statuses = [s for chunk in pool.map(run, [numbers[k::threads] for k in range(threads)]) for s in chunk]
    assert set(statuses) == {404}


def _series(points: list[DataPoint]) -> dict[str, set[frozenset[tuple[str, str]]]]:
    series: dict[str, set[frozenset[tuple[str, str]]]] = defaultdict(set)
    for point in points:
        series[point.metric].add(frozenset((k, str(v)) for k, v in point.attributes.items()))
    return series


def test_a_scanner_cannot_grow_the_metrics_of_the_real_app(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(
        collector, "flask-crm", OTEL_CRM_TENANT_METRIC_LIMIT=str(TENANT_LIMIT),
        OTEL_CRM_OPERATION_METRIC_LIMIT=str(OPERATION_LIMIT)))
    started = time.monotonic()
    assert requests.get(app.url(CREDENTIALS), timeout=10).status_code == 404
    _scan(app, range(WARM_UP))
    rss_before = _rss_kb(app)
    _scan(app, range(WARM_UP, SCANNER_PATHS))
    rss_after = _rss_kb(app)
    scanned = time.monotonic() - started
    app.process.stop()  # the last metric export

    def overflow() -> float:
        values = [p.value or 0.0 for p in collector.metrics() if p.metric == "crm.metric.overflow"
                  and p.attributes.get("crm.metric.name") == "crm.requests"
                  and p.attributes.get("crm.metric.attribute") == "crm.tenant.id"]
        return max(values, default=0.0)

    # Each request's tenant is new: the first TENANT_LIMIT are admitted, every other one is counted.
    wait_until(lambda: overflow() >= SCANNER_PATHS - TENANT_LIMIT, 30, "the overflow count of the scan")
    assert overflow() == SCANNER_PATHS - TENANT_LIMIT

    points = collector.metrics()
    ours = [p for p in points if p.metric.startswith("crm.")]
    series = _series(ours)
    assert {"crm.requests", "crm.request.duration", "crm.metric.overflow"} <= set(series)
    assert sum(p.value or 0 for p in ours if p.metric == "crm.requests") >= SCANNER_PATHS + 1
    for name, attribute_sets in series.items():
        values: dict[str, set[str]] = defaultdict(set)
        for attributes in attribute_sets:
            for key, value in attributes:
                values[key].add(value)
                assert "/scan/" not in value and "hunter2" not in value, (name, key, value)
        assert len(values.get("crm.tenant.id", set())) <= TENANT_LIMIT + 1, name  # + __other__
        assert len(values.get("crm.operation.name", set())) <= OPERATION_LIMIT + 1, name
        # method x status x (TENANT_LIMIT tenants + __other__), with room for the overflow counter's own
        assert len(attribute_sets) <= TENANT_LIMIT + 4, (name, len(attribute_sets))
    operations = {v for s in series["crm.requests"] for k, v in s if k == "crm.operation.name"}
    assert operations == {"GET", "GET /health"}, "an unrouted request is recorded under its method, never its path"
    # Nor does any metric of the upstream instrumentations carry a path.
    upstream = _series([p for p in points if not p.metric.startswith("crm.")])
    for name, attribute_sets in upstream.items():
        assert len(attribute_sets) <= 10, (name, len(attribute_sets))
    growth = rss_after - rss_before
    print(f"\nscanner: {SCANNER_PATHS} paths in {scanned:.1f}s; series: "
          f"{ {name: len(s) for name, s in sorted(series.items())} }; upstream: "
          f"{ {name: len(s) for name, s in sorted(upstream.items())} }; "
          f"VmRSS {rss_before} -> {rss_after} kB ({growth:+d} kB over the last {SCANNER_PATHS - WARM_UP} requests)")
    assert growth < RSS_GROWTH_BOUND_KB, growth
