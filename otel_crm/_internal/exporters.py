"""OTLP exporters for the three signals, configured from settings, never from the process environment."""

from __future__ import annotations

from typing import Any

from otel_crm._internal import semconv
from otel_crm._internal.settings import Settings

__all__ = ["QueueGuard", "otlp_exporter"]


def otlp_exporter(settings: Settings, signal: str) -> Any:
    """An OTLP exporter for `traces`, `metrics` or `logs`, over grpc or http/protobuf."""
    endpoint = settings.endpoint_for(signal)
    timeout = settings.otlp_timeout_ms / 1000
    headers = dict(settings.otlp_headers) or None
    if settings.otlp_protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http import Compression

        compression = Compression(settings.otlp_compression)
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpan

            return HttpSpan(endpoint=endpoint, headers=headers, timeout=timeout, compression=compression)
        if signal == "metrics":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HttpMetric,
            )

            return HttpMetric(endpoint=endpoint, headers=headers, timeout=timeout, compression=compression)
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLog

        return HttpLog(endpoint=endpoint, headers=headers, timeout=timeout, compression=compression)

    import grpc

    grpc_compression = {"none": grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip,
                        "deflate": grpc.Compression.Deflate}[settings.otlp_compression]
    insecure = settings.otlp_insecure
    if insecure is None:
        insecure = not endpoint.startswith("https://")
    kwargs: dict[str, Any] = {"endpoint": endpoint, "insecure": insecure, "headers": headers,
                              "timeout": timeout, "compression": grpc_compression}
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(**kwargs)
    if signal == "metrics":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    return OTLPLogExporter(**kwargs)


class QueueGuard:
    """Drop-and-count for the SDK's batch processors (spans and log records).

    The SDK logs a warning for every item dropped from a full queue (log spam during an outage)
    and counts nothing by default; the guard drops the newest item itself, counts it in
    `crm.telemetry.dropped`, and logs nothing.
    """

    def __init__(self, processor: Any, signal: str, meter: Any = None):
        inner = getattr(processor, "_batch_processor", None)
        self._queue = getattr(inner, "_queue", None)
        self._capacity = getattr(inner, "_max_queue_size", None) or 0
        self._attributes = {semconv.CRM_SIGNAL: signal, semconv.CRM_DROP_REASON: "queue_full"}
        self._dropped = (meter.create_counter(
            semconv.CRM_TELEMETRY_DROPPED, unit="{item}",
            description="Telemetry otel_crm dropped instead of blocking the app.")
            if meter is not None else None)

    def full(self) -> bool:
        """True (and counted) when the item must be dropped."""
        queue = self._queue
        if queue is None or len(queue) < self._capacity:
            return False
        if self._dropped is not None:
            self._dropped.add(1, self._attributes)
        return True
