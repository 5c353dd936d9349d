"""Metrics: OTLP push, an optional Prometheus pull endpoint, and views with the advised buckets."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from otel_crm._internal import semconv
from otel_crm._internal.corrections import deprecated_pool_metric_view
from otel_crm._internal.exporters import otlp_exporter
from otel_crm._internal.safety import report_internal_error
from otel_crm._internal.settings import Settings

__all__ = ["create_meter_provider", "semconv_views"]

_log = logging.getLogger("otel_crm")


def semconv_views() -> list[View]:
    """Bucket boundaries (seconds) advised by the conventions, also for instrumentations that
    do not pass the advice themselves."""
    spec = (
        (semconv.HTTP_SERVER_REQUEST_DURATION, semconv.HTTP_DURATION_BUCKETS),
        (semconv.HTTP_CLIENT_REQUEST_DURATION, semconv.HTTP_DURATION_BUCKETS),
        (semconv.DB_CLIENT_OPERATION_DURATION, semconv.DB_CLIENT_OPERATION_DURATION_BUCKETS),
        (semconv.GEN_AI_CLIENT_OPERATION_DURATION, semconv.GEN_AI_DURATION_BUCKETS),
        (semconv.GEN_AI_CLIENT_TOKEN_USAGE, semconv.GEN_AI_TOKEN_BUCKETS),
    )
    views = [View(instrument_name=name,
                  aggregation=ExplicitBucketHistogramAggregation(boundaries=[float(b) for b in buckets]))
             for name, buckets in spec]
    # An instrumentor set up by hand still records the deprecated pool metric: drop it (the distro
    # gives SQLAlchemy's a provider that records db.client.connection.count instead).
    views.append(deprecated_pool_metric_view())
    return views


def _prometheus_reader(settings: Settings) -> MetricReader | None:
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        from otel_crm._internal.prometheus import start_endpoint

        reader = PrometheusMetricReader()
        # Serves every process of a prefork server (see prometheus.py), not only this one.
        start_endpoint(settings.prometheus_host, settings.prometheus_port)
        return reader
    except Exception as exc:  # a port in use must not stop the app
        report_internal_error("prometheus_endpoint", exc, raise_in_tests=False)
        return None


def create_meter_provider(settings: Settings, resource: Resource,
                          extra_readers: tuple[Any, ...] = ()) -> MeterProvider:
    readers: list[MetricReader] = list(extra_readers)
    interval = settings.metric_export_interval_ms
    if "otlp" in settings.metrics_exporter:
        readers.append(PeriodicExportingMetricReader(
            otlp_exporter(settings, "metrics"), export_interval_millis=interval,
            export_timeout_millis=settings.otlp_timeout_ms))
    if "console" in settings.metrics_exporter:
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(),
                                                     export_interval_millis=interval))
    if settings.prometheus_port:
        reader = _prometheus_reader(settings)
        if reader is not None:
            readers.append(reader)
    return MeterProvider(resource=resource, metric_readers=readers, views=semconv_views(),
                         shutdown_on_exit=False)

