"""Exporters: the OTLP exporter a forked child uses is its own, never the parent's."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_crm._internal.exporters import (
    ForkSafeLogExporter,
    ForkSafeMetricExporter,
    ForkSafeSpanExporter,
    otlp_exporter,
)
from otel_crm._internal.settings import resolve_settings

fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def in_child(body: Callable[[], str]) -> str:
    """Run `body` in a forked child and return what it returned (or its error)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read)
            try:
                answer = body()
            except BaseException as exc:
                answer = f"error: {exc!r}"
            os.write(write, answer.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer


def recording_fork_safe_exporter(built: list[InMemorySpanExporter]) -> ForkSafeSpanExporter:
    """A fork-safe exporter whose every (re)build is an in-memory exporter appended to `built`."""

    def build() -> SpanExporter:
        built.append(InMemorySpanExporter())
        return built[-1]

    return ForkSafeSpanExporter(build)


@pytest.mark.parametrize(("protocol", "signal", "wrapper"), [
    ("grpc", "traces", ForkSafeSpanExporter), ("grpc", "metrics", ForkSafeMetricExporter),
    ("grpc", "logs", ForkSafeLogExporter), ("http/protobuf", "traces", ForkSafeSpanExporter),
    ("http/protobuf", "metrics", ForkSafeMetricExporter), ("http/protobuf", "logs", ForkSafeLogExporter),
])
def test_every_otlp_exporter_is_fork_safe(protocol: str, signal: str, wrapper: type) -> None:
    settings = resolve_settings({"OTEL_EXPORTER_OTLP_PROTOCOL": protocol})
    exporter = otlp_exporter(settings, signal)
    assert isinstance(exporter, wrapper)
    exporter.shutdown()


def test_metric_wrapper_keeps_the_temporality_the_user_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.metrics import Counter
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    # The upstream OTLP exporter reads this variable itself; the wrapper must pass its choice on.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    exporter = otlp_exporter(resolve_settings({}), "metrics")
    assert exporter._preferred_temporality[Counter] is AggregationTemporality.DELTA
    exporter.shutdown()


@fork_only
def test_a_forked_child_builds_and_uses_its_own_exporter() -> None:
    built: list[InMemorySpanExporter] = []
    exporter = recording_fork_safe_exporter(built)
    span = TracerProvider().get_tracer("t").start_span("s")
    span.end()
    exporter.export([span])

    def child() -> str:
        exporter.export([span])
        return f"{len(built)} {len(built[0].get_finished_spans())} {len(built[-1].get_finished_spans())}"

    # The child built a second exporter; the inherited one saw nothing more; the new one got the span.
    assert in_child(child) == "2 1 1"
    assert len(built) == 1 and len(built[0].get_finished_spans()) == 1, "the parent keeps its own"


@fork_only
def test_a_child_that_never_exported_has_nothing_to_shut_down() -> None:
    built: list[InMemorySpanExporter] = []
    exporter = recording_fork_safe_exporter(built)
    assert in_child(lambda: (exporter.shutdown(), str(len(built)))[1]) == "1"


def test_grpc_calls_pass_the_fork_gate_also_after_a_reconnect() -> None:
    from otel_crm._internal.exporters import _GatedStub

    exporter = otlp_exporter(resolve_settings({}), "traces")._exporter.current()
    assert isinstance(exporter._client, _GatedStub)
    exporter._initialize_channel_and_stub()  # what the SDK does after UNAVAILABLE
    assert isinstance(exporter._client, _GatedStub)
    exporter.shutdown()


def test_fork_waits_for_a_call_in_flight_and_holds_new_ones() -> None:
    import threading
    import time

    from otel_crm._internal.exporters import _ForkGate

    gate = _ForkGate()
    gate.max_wait = 5.0
    gate.enter()  # a call in flight
    forked = threading.Event()
    forking = threading.Thread(target=lambda: (gate.before_fork(), forked.set()))
    forking.start()
    assert not forked.wait(0.2), "fork() waits while our call is in flight"
    gate.leave()
    assert forked.wait(5)
    entered = threading.Event()
    caller = threading.Thread(target=lambda: (gate.enter(), entered.set(), gate.leave()))
    caller.start()
    assert not entered.wait(0.2), "a new call waits until fork() returned"
    gate.after_fork_in_parent()
    assert entered.wait(5)
    forking.join()
    caller.join()

    stuck = _ForkGate()
    stuck.max_wait = 0.3
    stuck.enter()  # never leaves: a blackholed collector
    started = time.monotonic()
    stuck.before_fork()
    assert 0.25 <= time.monotonic() - started < 3, "the wait is bounded by the export timeout"


def test_overlapping_forks_hold_new_calls_until_the_last_returns() -> None:
    import threading

    from otel_crm._internal.exporters import _ForkGate

    gate = _ForkGate()
    gate.before_fork()
    gate.before_fork()  # two threads forking at once
    gate.after_fork_in_parent()
    entered = threading.Event()
    caller = threading.Thread(target=lambda: (gate.enter(), entered.set(), gate.leave()))
    caller.start()
    assert not entered.wait(0.2), "the other fork is still under way"
    gate.after_fork_in_parent()
    assert entered.wait(5)
    caller.join()


def test_the_fork_wait_is_capped_whatever_the_export_timeout() -> None:
    import time

    from otel_crm._internal.exporters import _ForkGate

    gate = _ForkGate()
    gate.max_wait = 600.0
    gate.MAX_FORK_WAIT_SECONDS = 0.3  # type: ignore[misc]
    gate.enter()  # a call that never ends
    started = time.monotonic()
    gate.before_fork()
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
def test_every_otlp_exporter_pauses_at_most_a_second_between_retries(protocol: str, signal: str) -> None:
    import time

    from otel_crm._internal.exporters import MAX_RETRY_PAUSE_SECONDS, _build_otlp_exporter

    settings = resolve_settings({}, otlp_protocol=protocol, otlp_endpoint="http://127.0.0.1:9")
    exporter = _build_otlp_exporter(settings, signal)
    pause = getattr(exporter, "_shutdown_in_progress", None) or exporter._client._shutdown_event
    started = time.monotonic()
    assert pause.wait(0.05) is False and pause.wait(30) is False  # the SDK's 2**n s, capped
    assert time.monotonic() - started < MAX_RETRY_PAUSE_SECONDS + 0.5
    exporter.shutdown()  # still the shutdown signal: ends a pause at once
    assert pause.wait(30) is True


def test_grpc_exporters_reconnect_quickly_on_their_own_subchannel() -> None:
    from otel_crm._internal.exporters import GRPC_CHANNEL_OPTIONS

    settings = resolve_settings({}, otlp_protocol="grpc", otlp_endpoint="http://127.0.0.1:9")
    exporter = otlp_exporter(settings, "traces")
    options = dict(exporter._exporter.current()._channel_options)
    assert options["grpc.max_reconnect_backoff_ms"] == 1000 and options["grpc.use_local_subchannel_pool"] == 1
    assert set(dict(GRPC_CHANNEL_OPTIONS)) <= set(options)
    assert "grpc.primary_user_agent" in options  # the SDK's own options are kept


def test_the_gated_stub_sends_encoded_spans_as_they_are_and_anything_else_by_the_stub() -> None:
    from otel_crm._internal.exporters import _GatedStub
    from otel_crm._internal.otlp_spans import EncodedSpans

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    class Channel:
        def unary_unary(self, method: str, **serializers: Any) -> Any:
            assert method == "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            assert serializers["request_serializer"] is None  # the bytes are the serialised request
            return lambda *args, **kwargs: calls.append(("raw", args, kwargs))

    class Stub:
        def Export(self, *args: Any, **kwargs: Any) -> None:
            calls.append(("stub", args, kwargs))

    stub = _GatedStub(Stub(), Channel())
    stub.Export(request=EncodedSpans(b"spans"), metadata=(("k", "v"),), timeout=2.0)
    stub.Export(EncodedSpans(b"positional"), timeout=1.0)
    stub.Export(request="a message", timeout=3.0)
    assert calls == [("raw", (b"spans",), {"metadata": (("k", "v"),), "timeout": 2.0}),
                     ("raw", (b"positional",), {"timeout": 1.0}),
                     ("stub", (), {"request": "a message", "timeout": 3.0})]


@pytest.mark.parametrize("minimum_connect_ms", [None, 100])
def test_a_collector_slow_to_answer_a_new_connection_still_gets_the_spans(minimum_connect_ms: int | None,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that takes 1.5 s to start (a distant collector, TLS): gRPC gives a connection
    attempt `grpc.min_reconnect_backoff_ms` at least, so a 100 ms value (what otel_crm once set, for
    quick reconnection) made every attempt time out and the export fail; the default is 20 s."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    from otel_crm._internal import exporters
    from tests.support.otlp_receivers import grpc_trace_receiver, slow_start_proxy

    if minimum_connect_ms is not None:  # the old option: shows this test can fail
        monkeypatch.setattr(exporters, "GRPC_CHANNEL_OPTIONS",
                            (*exporters.GRPC_CHANNEL_OPTIONS, ("grpc.min_reconnect_backoff_ms", minimum_connect_ms)))
    span = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span))
    provider.get_tracer("t").start_span("s").end()
    with grpc_trace_receiver() as (endpoint, received), slow_start_proxy(int(endpoint.rsplit(":", 1)[1]), 1.5) as port:
        settings = resolve_settings({}, otlp_protocol="grpc", otlp_endpoint=f"http://127.0.0.1:{port}",
                                    otlp_timeout_ms=5000)
        exporter = otlp_exporter(settings, "traces")
        try:
            result = exporter.export(span.get_finished_spans())
        finally:
            exporter.shutdown()
    if minimum_connect_ms is None:
        assert result == SpanExportResult.SUCCESS and len(received.bodies) == 1
    else:
        assert result == SpanExportResult.FAILURE and not received.bodies
