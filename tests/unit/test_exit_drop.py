"""Exit without a collector: the endpoint probe, drop-and-count in the exporters, the one line."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_crm._internal import accounting, exit_drop
from otel_crm._internal.exporters import ForkSafeSpanExporter, otlp_exporter
from otel_crm._internal.safety import telemetry_dropped_counter
from otel_crm._internal.settings import resolve_settings
from tests.support.metrics import collect
from tests.support.processes import free_port


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    exit_drop.reset()
    accounting.reset()
    yield
    exit_drop.reset()
    accounting.reset()
    exit_drop.set_counter(None)


@pytest.mark.parametrize(("endpoint", "address"), [
    ("http://localhost:4317", ("localhost", 4317)), ("localhost:4317", ("localhost", 4317)),
    ("https://otel.example.com/v1/traces", ("otel.example.com", 443)),
    ("http://[::1]:4318/v1/logs", ("::1", 4318)), ("http://host:notaport", None),
])
def test_endpoint_address(endpoint: str, address: tuple[str, int] | None) -> None:
    assert exit_drop.endpoint_address(endpoint) == address


def test_probe_refused_is_down_listening_is_up() -> None:
    assert not exit_drop.probe(f"http://127.0.0.1:{free_port()}", succeeded=True)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert exit_drop.probe(f"http://127.0.0.1:{server.getsockname()[1]}", succeeded=False)


def test_every_otlp_exporter_registers_its_endpoint() -> None:
    settings = resolve_settings({}, otlp_protocol="http/protobuf", otlp_endpoint="http://127.0.0.1:9")
    exporter = otlp_exporter(settings, "logs")
    assert exporter.endpoint == "http://127.0.0.1:9/v1/logs" and exporter.signal == "logs"
    assert exporter in list(exit_drop._exporters)


def test_an_unreachable_endpoint_drops_counts_and_never_calls_the_exporter() -> None:
    reader = InMemoryMetricReader()
    exit_drop.set_counter(telemetry_dropped_counter(MeterProvider(metric_readers=[reader]).get_meter("t")))
    inner = InMemorySpanExporter()

    def build() -> SpanExporter:
        return inner

    exporter = ForkSafeSpanExporter(build)
    exporter.endpoint = f"http://127.0.0.1:{free_port()}"
    span = TracerProvider().get_tracer("t").start_span("s")
    span.end()
    assert exporter.export([span]) is SpanExportResult.SUCCESS and exporter.succeeded
    assert exit_drop.prepare([exporter]) == [exporter.endpoint]
    assert exporter.export([span, span]) is SpanExportResult.FAILURE
    assert len(inner.get_finished_spans()) == 1  # the real exporter saw only the first batch
    exporter.shutdown()  # closed once already (to wake retries): no second shutdown, no SDK warning
    point = collect(reader)["crm.telemetry.dropped"].data.data_points[0]
    assert point.value == 2
    assert dict(point.attributes) == {"crm.signal": "traces", "crm.drop.reason": "shutdown"}
    line = exit_drop.summary()
    assert line is not None and f"127.0.0.1:{exporter.endpoint.rsplit(':', 1)[1]}" in line
    assert "dropped 2 traces, 0 logs, 0 metrics" in line


def test_a_reachable_endpoint_keeps_the_ordinary_flush() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        inner = InMemorySpanExporter()
        exporter = ForkSafeSpanExporter(lambda: inner)
        exporter.endpoint = f"127.0.0.1:{server.getsockname()[1]}"
        assert exit_drop.prepare([exporter]) == []
    span = TracerProvider().get_tracer("t").start_span("s")
    span.end()
    assert exporter.export([span]) is SpanExportResult.SUCCESS
    assert exit_drop.summary() is None


def test_a_batch_in_flight_when_the_exit_found_no_collector_is_counted() -> None:
    span = TracerProvider().get_tracer("t").start_span("s")
    span.end()
    exporter: ForkSafeSpanExporter

    class Retrying(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            exporter.drop_from_now()  # the exit hook runs while this batch is retrying
            return SpanExportResult.FAILURE

    exporter = ForkSafeSpanExporter(Retrying)
    exporter.endpoint = "127.0.0.1:9"
    exit_drop.register(exporter)
    assert exporter.export([span, span, span]) is SpanExportResult.FAILURE
    exit_drop.prepare([])  # marks nothing; the line lists only unreachable endpoints
    assert exit_drop._dropped == {"traces": 3}
