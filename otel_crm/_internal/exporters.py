"""OTLP exporters for the three signals, configured from settings, never from the process environment."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_crm._internal import accounting, exit_drop, forks, sdk_compat, semconv
from otel_crm._internal.otlp_spans import EncodedSpans, grpc_raw_export, use_direct_encoding
from otel_crm._internal.safety import report_internal_error, telemetry_dropped_counter
from otel_crm._internal.settings import Settings

__all__ = ["GRPC_CHANNEL_OPTIONS", "ForkSafeLogExporter", "ForkSafeMetricExporter", "ForkSafeSpanExporter",
           "QueueGuard", "otlp_exporter"]


def otlp_exporter(settings: Settings, signal: str) -> Any:
    """An OTLP exporter for `traces`, `metrics` or `logs`, over grpc or http/protobuf, that
    builds itself anew in a forked child (see `_PerProcess`)."""
    def build() -> Any:
        return _build_otlp_exporter(settings, signal)

    exporter: Any
    if signal == "traces":
        exporter = ForkSafeSpanExporter(build)
    elif signal == "metrics":
        exporter = ForkSafeMetricExporter(build)
    else:
        exporter = ForkSafeLogExporter(build)
    exporter.endpoint = settings.endpoint_for(signal)
    exit_drop.register(exporter)
    return exporter


# Quick recovery after a collector outage. gRPC waits between reconnection attempts with an
# exponential backoff (1 s growing 1.6x up to 120 s by default), kept in a subchannel shared
# process-wide: after a 30 s outage the next attempt came up to ~20 s after the collector was back,
# and the exporter's own new channel inherited that wait. Attempts at most 1 s apart, on a
# subchannel of the exporter's own, resume exports within about a second (docs/telemetry.md).
# Not `grpc.min_reconnect_backoff_ms`: gRPC gives each connection attempt at least that long (its
# minimum connect timeout, 20 s by default), so 100 ms failed every handshake slower than the backoff.
GRPC_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.use_local_subchannel_pool", 1),
)


# The SDK exporters pause 1, 2, 4 s… between retries within the export timeout: a collector back
# during a 4 s pause waited for it. Capped, retries come at most 1 s apart (and a batch given up
# on, after the timeout, is counted: `export_failed`).
MAX_RETRY_PAUSE_SECONDS = 1.0


def _build_otlp_exporter(settings: Settings, signal: str) -> Any:
    exporter = _build_sdk_exporter(settings, signal)
    sdk_compat.cap_retry_pause(exporter, MAX_RETRY_PAUSE_SECONDS)
    if signal == "traces" and settings.fast_spans:
        use_direct_encoding(exporter)  # spans serialised without protobuf message objects (otlp_spans.py)
    return exporter


def _build_sdk_exporter(settings: Settings, signal: str) -> Any:
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
                              "timeout": timeout, "compression": grpc_compression,
                              "channel_options": GRPC_CHANNEL_OPTIONS}
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return _gate_grpc_calls(OTLPSpanExporter(**kwargs), timeout)
    if signal == "metrics":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return _gate_grpc_calls(OTLPMetricExporter(**kwargs), timeout)
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    return _gate_grpc_calls(OTLPLogExporter(**kwargs), timeout)


class _ForkGate:
    """Keeps our gRPC calls and fork() apart.

    gRPC survives fork() only when no thread is inside a gRPC call at that moment; otherwise it
    skips its fork handlers and the child's gRPC may hang or crash. Before a fork (the gunicorn
    master starting or replacing a worker) the gate waits for our calls in flight to end, and
    holds new ones until fork() returns. The wait is bounded by the longest export timeout (each
    call's deadline) and never exceeds `MAX_FORK_WAIT_SECONDS`, so a blackholed collector delays
    a fork by at most that; a refused connection fails at once. Forks may overlap (threads), so
    `_forking` counts them.
    """

    MAX_FORK_WAIT_SECONDS = 10.0

    def __init__(self) -> None:
        self.max_wait = 0.0
        self._reset()

    def _reset(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._calls = 0
        self._forking = 0
        self.rebuild_lock = threading.Lock()

    def enter(self) -> None:
        with self._condition:
            while self._forking:
                self._condition.wait()
            self._calls += 1

    def leave(self) -> None:
        with self._condition:
            self._calls -= 1
            if not self._calls:
                self._condition.notify_all()

    def before_fork(self) -> None:
        with self._condition:
            self._forking += 1
            deadline = time.monotonic() + min(self.max_wait, self.MAX_FORK_WAIT_SECONDS)
            while self._calls and (remaining := deadline - time.monotonic()) > 0:
                self._condition.wait(remaining)

    def after_fork_in_parent(self) -> None:
        with self._condition:
            self._forking -= 1
            if not self._forking:
                self._condition.notify_all()

    def after_fork_in_child(self) -> None:
        self._reset()  # parent threads holding these are gone


_gate = _ForkGate()
forks.register("exporters: gRPC fork gate", before=_gate.before_fork,
               after_in_parent=_gate.after_fork_in_parent, after_in_child=_gate.after_fork_in_child)


class _GatedStub:
    """A gRPC service stub whose Export calls pass the fork gate; a trace request otel_crm already
    serialised (otlp_spans.EncodedSpans) goes by the same method as is."""

    sends_encoded = True

    def __init__(self, stub: Any, channel: Any):
        self._stub = stub
        self._channel = channel
        self._raw: Any = None

    def Export(self, *args: Any, **kwargs: Any) -> Any:
        request = kwargs.get("request", args[0] if args else None)
        _gate.enter()
        try:
            if type(request) is EncodedSpans:
                if self._raw is None:
                    self._raw = grpc_raw_export(self._channel)
                return self._raw(request.data, *args[1:], **{k: v for k, v in kwargs.items() if k != "request"})
            return self._stub.Export(*args, **kwargs)
        finally:
            _gate.leave()


def _gate_grpc_calls(exporter: Any, timeout: float) -> Any:
    """Route the exporter's calls through the fork gate, also after it rebuilds its channel."""
    if sdk_compat.wrap_grpc_calls(exporter, _GatedStub):
        _gate.max_wait = max(_gate.max_wait, timeout)
    return exporter


class _PerProcess:
    """The real exporter of the current process.

    A connection is the process's own: an inherited gRPC channel can hang on first use in the
    child (and an HTTP session's pooled sockets are shared with the parent). The child therefore
    builds its own exporter on first use. The inherited one is kept, never touched: closing a
    channel inherited that way can hang too.
    """

    def __init__(self, build: Callable[[], Any]):
        self._build = build
        self._pid = os.getpid()
        self._exporter = build()
        self._inherited: list[Any] = []

    def current(self) -> Any:
        pid = os.getpid()
        if pid != self._pid:
            with _gate.rebuild_lock:
                if pid != self._pid:
                    self._inherited.append(self._exporter)
                    self._exporter = self._build()
                    self._pid = pid
        return self._exporter

    def shutdown(self, **kwargs: Any) -> None:
        """Shut down this process's exporter; a child that never exported has none to close."""
        if os.getpid() == self._pid:
            self._exporter.shutdown(**kwargs)


class _ExitDropping:
    """The exit side of an exporter (`exit_drop`): whether an export ever succeeded, and dropping
    (counted) instead of sending once the endpoint was found unreachable at exit."""

    signal = ""
    endpoint = ""
    succeeded = False
    _dropping = False
    _closed = False
    _exporter: _PerProcess

    def _account(self, success: bool, items: int) -> None:
        """Per batch, on the export thread: exported, or lost after the exporter's own retries."""
        if success:
            self.succeeded = True
            accounting.exported(self.signal, items)
        elif self._dropping:  # a batch in flight (retrying) when the exit found no collector
            exit_drop.count(self.signal, items)
        else:
            accounting.drop(self.signal, "export_failed", items)

    def drop_from_now(self) -> None:
        self._dropping = True
        # Wakes an export sleeping between retries (the gRPC exporter waits on its shutdown event).
        self._close()

    def _close(self, **kwargs: Any) -> None:
        if not self._closed:  # the SDK warns on a second shutdown()
            self._closed = True
            self._exporter.shutdown(**kwargs)


class _ForkSafeBatchExporter(_ExitDropping):
    """Span and log exporters share one interface: export(batch), shutdown(), force_flush()."""

    _success: Any
    _failure: Any

    def __init__(self, build: Callable[[], Any]):
        self._exporter = _PerProcess(build)

    def export(self, batch: Sequence[Any]) -> Any:
        if self._dropping:
            exit_drop.count(self.signal, len(batch))
            return self._failure
        try:
            result = self._exporter.current().export(batch)
        except Exception as exc:  # the batch processor would log it per batch, uncounted
            _export_raised(self.signal, len(batch), exc)
            return self._failure
        self._account(result == self._success, len(batch))
        return result

    def shutdown(self) -> None:
        self._close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._exporter.current().force_flush(timeout_millis))


class ForkSafeSpanExporter(_ForkSafeBatchExporter, SpanExporter):
    signal = "traces"
    _success, _failure = SpanExportResult.SUCCESS, SpanExportResult.FAILURE


class ForkSafeLogExporter(_ForkSafeBatchExporter, LogRecordExporter):
    signal = "logs"
    _success, _failure = LogRecordExportResult.SUCCESS, LogRecordExportResult.FAILURE


def _export_raised(signal: str, items: int, exc: Exception) -> None:
    """An exporter that raised instead of returning FAILURE: its items are lost, counted; the
    error is reported once (not re-raised even under pytest: the export thread must go on)."""
    accounting.drop(signal, "export_error", items)
    report_internal_error(f"{signal} exporter", exc, raise_in_tests=False)


def _data_points(metrics_data: MetricsData) -> int:
    return sum(len(metric.data.data_points) for resource in metrics_data.resource_metrics
               for scope in resource.scope_metrics for metric in scope.metrics)


class ForkSafeMetricExporter(_ExitDropping, MetricExporter):
    signal = "metrics"

    def __init__(self, build: Callable[[], MetricExporter]):
        self._exporter = _PerProcess(build)
        temporality, aggregation = sdk_compat.metric_exporter_preferences(self._exporter.current())
        super().__init__(preferred_temporality=temporality, preferred_aggregation=aggregation)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        points = _data_points(metrics_data)
        accounting.produce(self.signal, points)
        if self._dropping:
            exit_drop.count(self.signal, points)
            return MetricExportResult.FAILURE
        try:
            result: MetricExportResult = self._exporter.current().export(
                metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:
            _export_raised(self.signal, points, exc)
            return MetricExportResult.FAILURE
        self._account(result is MetricExportResult.SUCCESS, points)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self._exporter.current().force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._close(timeout_millis=timeout_millis, **kwargs)


class QueueGuard:
    """Drop-and-count for the SDK's batch processors (spans and log records).

    The SDK logs a warning for every item dropped from a full queue (log spam during an outage)
    and its bounded deque drops the oldest item silently; the guard drops the newest item itself,
    counts it in `crm.telemetry.dropped`, and logs nothing. The check and the enqueue share one
    lock, so two threads racing for the last free slot cannot make the deque drop one uncounted.
    """

    def __init__(self, processor: Any, signal: str, meter: Any = None):
        self._queue, self._capacity = sdk_compat.batch_queue(processor)
        self._lock = threading.Lock()
        self._attributes = {semconv.CRM_SIGNAL: signal, semconv.CRM_DROP_REASON: "queue_full"}
        self._signal = signal
        self._dropped = telemetry_dropped_counter(meter) if meter is not None else None
        if self._dropped is not None:
            exit_drop.set_counter(self._dropped)
        self._produced = accounting.produced_cell(signal)
        _queue_guards.add(self)

    def offer(self, item: Any, enqueue: Callable[[Any], None]) -> None:
        """`enqueue(item)` if the queue has room, else drop it and count the drop."""
        queue = self._queue
        with self._lock:
            self._produced.n += 1  # under the lock taken anyway: exact, and no second lock
            if queue is None:
                enqueue(item)
                return
            if len(queue) < self._capacity:
                enqueue(item)
                return
        accounting.drop(self._signal, "queue_full", 1, count=False)
        if self._dropped is not None:
            self._dropped.add(1, self._attributes)

    def after_fork(self) -> None:
        self._lock = threading.Lock()  # a parent thread may have held it at fork time


# One fork hook for every guard (a hook per instance would pile up across configurations).
_queue_guards: weakref.WeakSet[QueueGuard] = weakref.WeakSet()


def _renew_queue_guards() -> None:
    for guard in list(_queue_guards):
        guard.after_fork()


forks.register("exporters: queue guard locks", after_in_child=_renew_queue_guards)
