"""OTLP exporters for the three signals, configured from settings, never from the process environment."""

from __future__ import annotations

from typing import Any

from otel_crm._internal.settings import Settings

__all__ = ["otlp_exporter"]


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
