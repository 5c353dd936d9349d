"""RED metrics (rate, errors, duration) from 100% of entry spans, before any sampling decision.

An entry span is a local root — no parent, or a remote parent (an incoming request) — that is
not itself an outgoing call (CLIENT/PRODUCER spans without a parent are startup noise such as a
schema migration's queries, not work the service was asked to do). So dashboards
stay exact at a 10% keep rate, and they carry the tenant, which the HTTP instrumentations'
`http.server.request.duration` does not (and they cover jobs and CLI commands, which it does not).

Cost per entry span (it runs on the request thread, for every request): one SDK instrument
recording, the duration histogram. The two counters (`crm.requests`, `crm.request.errors`) are
kept here, one integer per attribute set under a lock, and reported to the SDK as observable
counters when a reader collects: the same names, units, attributes and sums as a synchronous
counter, without the SDK's per-measurement work (copying, cleaning and hashing the attributes)
twice more per request. The attribute set of a span is computed once per distinct raw key
(method, route, status, name, kind, tenant, error type) and reused while the cardinality guard
admitted every value in it (an overflow is never cached, so every overflow is still counted).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

from otel_crm._internal import forks, semconv
from otel_crm._internal.cardinality import OTHER, CardinalityGuard
from otel_crm._internal.corrections import operation_name
from otel_crm._internal.fast_histogram import FastHistogram, fast_histogram
from otel_crm._internal.safety import guard
from otel_crm._internal.sdk_compat import span_attributes

__all__ = ["REQUEST_DURATION_BUCKETS", "RedMetricsProcessor"]

REQUEST_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 2.5, 5.0,
                            7.5, 10.0, 30.0, 60.0)
_CLIENT, _PRODUCER, _SERVER = SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.SERVER
_COPIED = (semconv.HTTP_REQUEST_METHOD, semconv.HTTP_ROUTE, semconv.HTTP_RESPONSE_STATUS_CODE)
_METHOD, _ROUTE, _STATUS = _COPIED  # the raw key reads them one by one (no generator per request)


_Key = tuple[object, ...]
_CACHE_MAX = 4096  # raw keys remembered; a full cache starts again (bounded memory)


class RedMetricsProcessor(SpanProcessor):
    def __init__(self, meter: Meter, cardinality: CardinalityGuard | None = None, fast: bool = True):
        self._reset()
        _register(meter, self)
        self._duration = fast_histogram(meter.create_histogram(  # the SDK's aggregations, fewer steps
            semconv.CRM_REQUEST_DURATION, unit="s",
            description="Duration of entry spans, recorded before sampling.",
            explicit_bucket_boundaries_advisory=list(REQUEST_DURATION_BUCKETS)), enabled=fast)
        # Each row's attributes dict never changes: recorded through the entry the row keeps.
        self._fixed = isinstance(self._duration, FastHistogram)
        self._bound = cardinality.bound_all if cardinality is not None else None
        # The bound method is held weakly: the hook goes away with this processor.
        forks.register(f"red: request counts {id(self)}", after_in_child=self._reset)

    def _reset(self) -> None:
        """Empty counts (also a forked child's: its metric stores start empty too, see forks.py)."""
        self._lock = threading.Lock()
        # one row per distinct attribute set: [attributes, requests, errors, the duration histogram's
        # entry for the attributes (FastHistogram.record_fixed)]; kept for good, as the
        # SDK keeps a cumulative counter's points (the cardinality guard bounds how many there are)
        self._rows: dict[frozenset[tuple[str, AttributeValue]], list[Any]] = {}
        self._by_key: dict[_Key, list[Any]] = {}  # raw key -> its row (bounded cache)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        parent = span.parent
        if parent is not None and not parent.is_remote:
            return
        kind = span.kind  # (identity, not a set: SpanKind's hash is a Python call)
        if kind is _CLIENT or kind is _PRODUCER:  # e.g. a DB call at startup, outside any request or job
            return
        try:  # once per request: `guard` only sees the (never expected) exception
            self._record(span)
        except Exception:
            with guard("red_metrics"):
                raise

    def _record(self, span: ReadableSpan) -> None:
        source = span_attributes(span)
        get = source.get
        failed = span.status.status_code is StatusCode.ERROR
        error_type = (str(get(semconv.ERROR_TYPE) or _exception_type(span) or "_OTHER")
                      if failed else None)
        tenant = get(semconv.CRM_TENANT_ID)  # already in its outgoing form (TenantSpanProcessor)
        kind = span.kind
        # SERVER (nearly every entry span) keyed as 0: SpanKind's hash is a Python call. A plain Enum
        # never equals 0, so keys stay distinct.
        key: _Key = (span.name, 0 if kind is _SERVER else kind, tenant, error_type, get(_METHOD), get(_ROUTE),
                     get(_STATUS))
        row = self._by_key.get(key)
        if row is None:
            row = self._row(key, self._labels(span, source, tenant, error_type))
        with self._lock:
            row[1] += 1
            if failed:
                row[2] += 1
        end, start = span.end_time, span.start_time
        if end is not None and start is not None:
            if self._fixed:
                row[3] = self._duration.record_fixed((end - start) / 1e9, row[0], row[3])
            else:
                self._duration.record((end - start) / 1e9, row[0])

    def _labels(self, span: ReadableSpan, source: Any, tenant: object,
                    error_type: str | None) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {}
        for key in _COPIED:
            value = source.get(key)
            if value is not None:
                attributes[key] = value
        # An unrouted request (a 404, a scanner) is recorded under its method alone, never its path.
        attributes[semconv.CRM_OPERATION_NAME] = operation_name(span.name, span.kind, source)
        if tenant is not None:
            attributes[semconv.CRM_TENANT_ID] = str(tenant)
        if error_type is not None:
            attributes[semconv.ERROR_TYPE] = error_type
        if self._bound is not None:  # scrubbed, and each attribute within its budget
            self._bound(semconv.CRM_REQUESTS, attributes)  # type: ignore[arg-type]
        return attributes

    def _row(self, key: _Key, attributes: dict[str, AttributeValue]) -> list[Any]:
        """The count row of `attributes` (equal sets share one), remembered for `key` unless the
        cardinality guard overflowed a value: an overflow is then bounded, and counted, each time."""
        frozen = frozenset(attributes.items())
        with self._lock:
            row = self._rows.get(frozen)
            if row is None:
                row = self._rows[frozen] = [attributes, 0, 0, None]
        if OTHER not in attributes.values():
            if len(self._by_key) >= _CACHE_MAX:
                self._by_key.clear()
            self._by_key[key] = row
        return row

    def rows(self) -> list[tuple[dict[str, AttributeValue], int, int]]:
        """(attributes, requests, errors) per attribute set counted so far."""
        with self._lock:
            return [(row[0], row[1], row[2]) for row in self._rows.values()]

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# The SDK registers an instrument name once per meter and calls only the first instrument's
# callbacks: every processor recording on a meter is reported by the one pair of observable
# counters registered for it (rows of equal attributes summed).
_processors: weakref.WeakKeyDictionary[Any, weakref.WeakSet[RedMetricsProcessor]] = weakref.WeakKeyDictionary()
_processors_lock = threading.Lock()


def _register(meter: Meter, processor: RedMetricsProcessor) -> None:
    with _processors_lock:
        members = _processors.get(meter)
        if members is None:
            members = _processors[meter] = weakref.WeakSet()
            meter.create_observable_counter(
                semconv.CRM_REQUESTS, callbacks=[functools.partial(_observe, members, 1)], unit="{request}",
                description="Entry spans (requests, jobs, commands), counted before sampling.")
            meter.create_observable_counter(
                semconv.CRM_REQUEST_ERRORS, callbacks=[functools.partial(_observe, members, 2)],
                unit="{request}", description="Entry spans that ended in error, counted before sampling.")
        members.add(processor)


def _observe(members: weakref.WeakSet[RedMetricsProcessor], column: int,
             options: CallbackOptions) -> Iterable[Observation]:
    totals: dict[frozenset[tuple[str, AttributeValue]], list[Any]] = {}
    for processor in list(members):
        for row in processor.rows():
            count = row[column]
            if count:
                total = totals.setdefault(frozenset(row[0].items()), [row[0], 0])
                total[1] += count
    return [Observation(count, attributes) for attributes, count in totals.values()]


def _exception_type(span: ReadableSpan) -> str | None:
    for event in span.events:
        if event.name == "exception" and event.attributes:
            value = event.attributes.get(semconv.EXCEPTION_TYPE)
            if value:
                return str(value)
    return None
