"""Metric helpers shared by unit tests."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

__all__ = ["collect"]


def collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    """Every metric collected once, by name (a delta reader: collect only once per check)."""
    data = reader.get_metrics_data()
    found: dict[str, Any] = {}
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                found[metric.name] = metric
    return found
