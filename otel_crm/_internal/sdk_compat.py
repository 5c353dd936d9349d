"""The place that touches the OpenTelemetry SDK's private names, checked at import (with its siblings
sdk_fast_paths.py and the span path's fast_tracer.py, fast_span.py and fast_tracer_probe.py).

The public API lacks a few things otel_crm needs; each is done here and nowhere else:

- ``SPAN_FIELDS_DIRECT``: the tail sampler's hot path reads ``ReadableSpan`` fields (``_context``,
  ``_parent``, ``_status``, ``_events``, ``_start_time``, ``_end_time``), ``SpanContext`` as a
  tuple, ``Status._status_code`` and the SDK's ``BoundedList._dq`` (events): the ~10 public
  properties it needs cost ~1 µs per span, two of them Python calls on every span end.
- :func:`span_parts`, :func:`instrumentation_info`, :func:`attributes_dict`: the scrubbing exporter
  reads a span's attributes, events and links without the copy each property makes.
- :func:`update_resource`: a forked worker's own ``process.pid`` on the providers' resource.
- :func:`active_span_processor`: ``otel_crm.testing`` forwards the global provider's spans.
- :func:`restart_metrics_after_fork`: fresh measurement stores and locks in a forked child.
- :func:`metric_exporter_preferences`, :func:`batch_queue`, :func:`grpc_stub`, :func:`wrap_grpc_calls`: exporter and
  batch-processor internals for fork safety and drop-and-count.
- :func:`cap_retry_pause`: the OTLP exporters' pause between retries, capped (quick recovery).
- ``BaseConfigurator``: the base class ``opentelemetry-instrument`` expects of a configurator.
- Its siblings (the other modules allowed private SDK names): ``sdk_fast_paths.py``, attribute cleaning
  and metric-attribute hashing answered for the common exact types before the SDK's functions;
  ``fast_tracer.py``, otel_crm's tracer provider with a cheaper span path (probed at first use by
  ``fast_tracer_probe.py``; its span and processor dispatch in ``fast_span.py``).

Each assumption is checked once, at import (the last four at first use: building a batch
processor starts a thread, importing gRPC costs ~100 ms). A failed check never breaks the app: the
feature falls back to the public API (same results, slower) or is skipped, and one warning says
what is lost. `tests/unit/test_sdk_compat.py` requires every check to pass on the pinned SDK and
that no other module touches private SDK names (the tail sampler's hot path reads the fields
``SPAN_FIELDS_DIRECT`` vouches for).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

__all__ = [
    "ATTRIBUTES_DICT",
    "BASE_CONFIGURATOR_FOUND",
    "METRIC_STORES_RESETTABLE",
    "PREFERENCES_READABLE",
    "RESOURCE_UPDATABLE",
    "SPAN_FIELDS_DIRECT",
    "SPAN_PARTS_DIRECT",
    "SPAN_PROCESSOR_READABLE",
    "BaseConfigurator",
    "active_span_processor",
    "attributes_dict",
    "batch_queue",
    "cap_retry_pause",
    "check_feature",
    "grpc_stub",
    "instrumentation_info",
    "metric_exporter_preferences",
    "restart_metrics_after_fork",
    "span_parts",
    "update_resource",
    "wrap_grpc_calls",
]

_log = logging.getLogger("otel_crm")
_warned: set[str] = set()


def _degraded(feature: str, consequence: str) -> None:
    """One warning per feature whose SDK internals are not what this module expects."""
    if feature not in _warned:
        _warned.add(feature)
        _log.warning("otel_crm: this opentelemetry-sdk differs from the one otel_crm was built for (%s); %s",
                     feature, consequence)


def check_feature(feature: str, consequence: str, probe: Callable[[], bool]) -> bool:
    """`probe()` is true (it must not raise); otherwise one warning says `consequence`."""
    try:
        ok = probe()
    except Exception:
        ok = False
    if not ok:
        _degraded(feature, consequence)
    return ok


# --- spans ------------------------------------------------------------------------------------------

def _probe_span() -> tuple[ReadableSpan, SpanContext, SpanContext, Status]:
    context = SpanContext(3, 4, True, TraceFlags(1))
    parent = SpanContext(3, 5, False, TraceFlags(0))
    status = Status(StatusCode.ERROR)
    event = Event("e", {"k": "v"})
    link = Link(parent, {"l": 1})
    span = ReadableSpan("probe", context=context, parent=parent, status=status, start_time=7, end_time=9,
                        attributes={"a": 1}, events=(event,), links=(link,))
    return span, context, parent, status


def _span_fields_direct() -> bool:
    span, context, parent, status = _probe_span()
    fields: Any = span
    return (tuple(context)[:4] == (3, 4, True, 1) and tuple(parent)[:4] == (3, 5, False, 0)
            and issubclass(Span, ReadableSpan) and fields._context is context and fields._parent is parent
            and fields._status is status and fields._start_time == 7 and fields._end_time == 9
            and tuple(fields._events) == tuple(span.events) and status._status_code is StatusCode.ERROR
            and _bounded_events_direct())


def _bounded_events_direct() -> bool:
    from opentelemetry.sdk.util import BoundedList

    events: Any = BoundedList(2)
    empty = type(events._dq) is deque and not events._dq
    events.append(Event("e"))
    return empty and list(events._dq) == list(events)


def _span_parts_direct() -> bool:
    span = _probe_span()[0]
    fields: Any = span
    return (isinstance(fields._attributes, Mapping) and dict(fields._attributes) == {"a": 1}
            and list(fields._events) == list(span.events) and list(fields._links) == list(span.links)
            and hasattr(span, "_instrumentation_info"))


SPAN_FIELDS_DIRECT = check_feature("ReadableSpan fields", "the tail sampler uses the public properties (slower)",
                            _span_fields_direct)
SPAN_PARTS_DIRECT = check_feature("ReadableSpan attributes/events/links", "scrubbing uses the public properties "
                           "(slower)", _span_parts_direct)
ATTRIBUTES_DICT = check_feature("BoundedAttributes._dict", "scrubbing iterates attributes the public way (slower)",
                         lambda: type(getattr(BoundedAttributes(attributes={"a": 1}), "_dict", None)) is dict)


def span_parts(span: ReadableSpan) -> tuple[Mapping[str, Any] | None, Sequence[Event], Sequence[Link]]:
    """A span's attributes, events and links, without the copies the public properties make."""
    if not SPAN_PARTS_DIRECT:
        return span.attributes, span.events, span.links
    attributes = getattr(span, "_attributes", None)  # a span of another make may lack any of them
    if not isinstance(attributes, Mapping):
        attributes = span.attributes
    events = span.events if getattr(span, "_events", True) else ()
    links = span.links if getattr(span, "_links", True) else ()
    return attributes, events, links


def instrumentation_info(span: ReadableSpan) -> Any:
    """The deprecated InstrumentationInfo, passed on when a span is rebuilt (the property warns)."""
    return getattr(span, "_instrumentation_info", None)


def span_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """An ended span's attributes, for reading a few keys: the SDK's plain dict when it keeps one
    (a dict lookup in C; the public property wraps the Python-level BoundedAttributes mapping in a
    proxy, and its `.get` of a missing key raises and catches a KeyError), else the public mapping."""
    if SPAN_PARTS_DIRECT and ATTRIBUTES_DICT:
        try:
            fields: Any = span
            inner = fields._attributes._dict
        except AttributeError:  # a span of another make
            inner = None
        if type(inner) is dict:
            return inner
    return span.attributes or {}


def attributes_dict(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    """BoundedAttributes' inner dict (iterates in C; the wrapper iterates in Python), else as is."""
    inner = getattr(attributes, "_dict", None)
    return inner if type(inner) is dict else attributes


# --- providers --------------------------------------------------------------------------------------

RESOURCE_UPDATABLE = check_feature(
    "provider._update_resource", "a forked worker keeps the parent's process.pid",
    lambda: all(callable(getattr(cls, "_update_resource", None))
                for cls in (TracerProvider, MeterProvider, LoggerProvider)))


def update_resource(provider: TracerProvider | MeterProvider | LoggerProvider, resource: Resource) -> None:
    """Merge `resource` into the provider's resource (what the SDK does for service.instance.id
    after a fork)."""
    if RESOURCE_UPDATABLE:
        provider._update_resource(resource)


def _span_processor_readable() -> bool:
    provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource({}), shutdown_on_exit=False)
    return isinstance(getattr(provider, "_active_span_processor", None), SpanProcessor)


SPAN_PROCESSOR_READABLE = check_feature("TracerProvider._active_span_processor",
                                 "otel_crm.testing captures only otel_crm's own spans", _span_processor_readable)


def active_span_processor(provider: TracerProvider) -> SpanProcessor | None:
    """The processor a provider hands every span to (all its added processors), if reachable."""
    if not SPAN_PROCESSOR_READABLE:
        return None
    processor: SpanProcessor = provider._active_span_processor
    return processor


# --- metrics ----------------------------------------------------------------------------------------

def _metric_stores_resettable() -> bool:
    provider = MeterProvider(metric_readers=(), resource=Resource({}), shutdown_on_exit=False)
    fields: Any = provider
    consumer = fields._measurement_consumer
    parameters = list(inspect.signature(consumer.__init__).parameters)
    return (isinstance(consumer._reader_storages, dict) and hasattr(consumer, "_sdk_config")
            and isinstance(consumer._async_instruments, list) and isinstance(fields._meters, dict)
            and len(parameters) >= 2)


METRIC_STORES_RESETTABLE = check_feature("MeterProvider measurement stores",
                                  "a worker forked mid-collection may never export a metric",
                                  _metric_stores_resettable)


def restart_metrics_after_fork(provider: MeterProvider) -> None:
    """Give a forked child a metrics pipeline no parent thread can hold.

    Only the forking thread survives fork(); a lock another thread held at that moment stays
    locked forever in the child. The SDK renews the provider's own locks and reader thread, but
    not the measurement store's or the export lock, so a worker forked while the gunicorn master
    (with --preload) was collecting or exporting never exports a metric. The child gets empty
    stores with fresh locks, which is also right on its own terms: it reports under a new
    service.instance.id, so the master's counts are not its counts.
    """
    if not METRIC_STORES_RESETTABLE:
        return
    fields: Any = provider
    consumer: Any = fields._measurement_consumer
    callbacks = list(consumer._async_instruments)
    readers = list(consumer._reader_storages)  # the current ones, also those added later
    consumer.__init__(consumer._sdk_config, readers)
    consumer._async_instruments = callbacks
    for reader in readers:
        if hasattr(reader, "_export_lock"):  # PeriodicExportingMetricReader's
            reader._export_lock = threading.Lock()
    for meter in list(fields._meters.values()):
        if hasattr(meter, "_instrument_registration_lock"):
            meter._instrument_registration_lock = threading.Lock()


class _ProbeExporter(MetricExporter):
    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def _preferences_readable() -> bool:
    temporality: dict[type, Any] = {Counter: AggregationTemporality.DELTA}
    aggregation: dict[type, Any] = {}
    probe = _ProbeExporter(preferred_temporality=temporality, preferred_aggregation=aggregation)
    return (getattr(probe, "_preferred_temporality", None) is temporality
            and getattr(probe, "_preferred_aggregation", None) is aggregation)


PREFERENCES_READABLE = check_feature("MetricExporter preferences",
                              "a fork-safe OTLP metric exporter uses the SDK's default temporality",
                              _preferences_readable)


def metric_exporter_preferences(exporter: MetricExporter) -> tuple[dict[type, Any] | None, dict[type, Any] | None]:
    """The temporality and aggregation `exporter` was built with, for a wrapper to pass on."""
    if not PREFERENCES_READABLE:
        return None, None
    fields: Any = exporter
    return fields._preferred_temporality, fields._preferred_aggregation


# --- exporters (checked at first use) ---------------------------------------------------------------

def batch_queue(processor: object) -> tuple[Any, int]:
    """A BatchSpanProcessor's / BatchLogRecordProcessor's deque and capacity; (None, 0) if unknown."""
    inner = getattr(processor, "_batch_processor", None)
    queue = getattr(inner, "_queue", None)
    capacity = getattr(inner, "_max_queue_size", None)
    if queue is None or not isinstance(capacity, int) or not hasattr(queue, "__len__"):
        _degraded("batch processor queue", "a full export queue drops the oldest item, uncounted")
        return None, 0
    return queue, capacity


def grpc_stub(exporter: object) -> Any:
    """The OTLP gRPC exporter's service stub (None for an exporter of another make)."""
    return getattr(exporter, "_client", None)


def wrap_grpc_calls(exporter: object, wrap: Callable[[Any, Any], Any]) -> bool:
    """Make `wrap(stub, channel)` the OTLP gRPC exporter's service stub, also the one it builds
    when it reconnects. False (nothing changed) for an exporter not built the way this SDK builds them."""
    fields: Any = exporter
    make_stub = getattr(fields, "_stub", None)
    if make_stub is None or getattr(fields, "_client", None) is None or getattr(fields, "_channel", None) is None:
        _degraded("OTLP gRPC exporter stub", "fork() does not wait for exports in flight")
        return False
    fields._stub = lambda channel: wrap(make_stub(channel), channel)
    fields._client = wrap(fields._client, fields._channel)
    return True


class _CappedWait(threading.Event):
    """The retry pause of an OTLP exporter, never longer than `cap` seconds; `set()` (shutdown)
    still ends it at once."""

    def __init__(self, cap: float, was_set: bool) -> None:
        super().__init__()
        self._cap = cap
        if was_set:
            self.set()

    def wait(self, timeout: float | None = None) -> bool:
        return super().wait(self._cap if timeout is None else min(timeout, self._cap))


def cap_retry_pause(exporter: object, seconds: float) -> bool:
    """Pause at most `seconds` between an OTLP exporter's retries (the SDK doubles it: 1, 2, 4 s…,
    within the export timeout), so exports resume soon after the collector is back. The event the
    exporter sleeps on is also its shutdown signal, kept as such. False when not found."""
    fields: Any = exporter
    owner, name = fields, "_shutdown_in_progress"  # the gRPC exporters
    if not isinstance(getattr(owner, name, None), threading.Event):
        owner, name = getattr(fields, "_client", None), "_shutdown_event"  # the HTTP exporters' client
    event = getattr(owner, name, None)
    if not isinstance(event, threading.Event):
        _degraded("OTLP exporter retry pause", "exports resume up to 4 s later after a collector outage")
        return False
    setattr(owner, name, _CappedWait(seconds, event.is_set()))
    return True


# --- opentelemetry-instrument -----------------------------------------------------------------------

try:
    from opentelemetry.sdk._configuration import _BaseConfigurator as BaseConfigurator
except ImportError:  # pragma: no cover - every supported SDK has it
    class BaseConfigurator:  # type: ignore[no-redef]
        """What opentelemetry-instrument calls on a configurator: configure(**kwargs)."""

        def configure(self, **kwargs: Any) -> None:
            self._configure(**kwargs)

        def _configure(self, **kwargs: Any) -> None:
            raise NotImplementedError

BASE_CONFIGURATOR_FOUND = check_feature("_BaseConfigurator", "otel_crm's configurator uses a stand-in base class",
                                 lambda: BaseConfigurator.__module__ == "opentelemetry.sdk._configuration"
                                 and callable(getattr(BaseConfigurator, "configure", None)))
