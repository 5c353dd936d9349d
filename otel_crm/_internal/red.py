"""RED metrics (rate, errors, duration) from 100% of entry spans, before any sampling decision.

An entry span is a local root — no parent, or a remote parent (an incoming request) — that is
not itself an outgoing call (CLIENT/PRODUCER spans without a parent are startup noise such as a
schema migration's queries, not work the service was asked to do). So dashboards
stay exact at a 10% keep rate, and they carry the tenant, which the HTTP instrumentations'
`http.server.request.duration` does not (and they cover jobs and CLI commands, which it does not).
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.metrics import Meter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

from otel_crm._internal import semconv
from otel_crm._internal.cardinality import CardinalityGuard
from otel_crm._internal.corrections import operation_name
from otel_crm._internal.safety import guard

__all__ = ["REQUEST_DURATION_BUCKETS", "RedMetricsProcessor"]

REQUEST_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 2.5, 5.0,
                            7.5, 10.0, 30.0, 60.0)
_NOT_ENTRIES = frozenset({SpanKind.CLIENT, SpanKind.PRODUCER})
_COPIED = (semconv.HTTP_REQUEST_METHOD, semconv.HTTP_ROUTE, semconv.HTTP_RESPONSE_STATUS_CODE)


class RedMetricsProcessor(SpanProcessor):
    def __init__(self, meter: Meter, cardinality: CardinalityGuard | None = None):
        self._requests = meter.create_counter(
            semconv.CRM_REQUESTS, unit="{request}",
            description="Entry spans (requests, jobs, commands), counted before sampling.")
        self._errors = meter.create_counter(
            semconv.CRM_REQUEST_ERRORS, unit="{request}",
            description="Entry spans that ended in error, counted before sampling.")
        self._duration = meter.create_histogram(
            semconv.CRM_REQUEST_DURATION, unit="s",
            description="Duration of entry spans, recorded before sampling.",
            explicit_bucket_boundaries_advisory=list(REQUEST_DURATION_BUCKETS))
        self._bound = cardinality.bound_all if cardinality is not None else None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        parent = span.parent
        if parent is not None and not parent.is_remote:
            return
        if span.kind in _NOT_ENTRIES:  # e.g. a DB call at startup, outside any request or job
            return
        with guard("red_metrics"):
            self._record(span)

    def _record(self, span: ReadableSpan) -> None:
        source = span.attributes or {}
        attributes: dict[str, AttributeValue] = {}
        for key in _COPIED:
            value = source.get(key)
            if value is not None:
                attributes[key] = value
        # An unrouted request (a 404, a scanner) is recorded under its method alone, never its path.
        attributes[semconv.CRM_OPERATION_NAME] = operation_name(span.name, span.kind, source)
        tenant = source.get(semconv.CRM_TENANT_ID)  # already in its outgoing form (TenantSpanProcessor)
        if tenant is not None:
            attributes[semconv.CRM_TENANT_ID] = str(tenant)
        failed = span.status.status_code is StatusCode.ERROR
        if failed:
            attributes[semconv.ERROR_TYPE] = str(source.get(semconv.ERROR_TYPE)
                                                 or _exception_type(span) or "_OTHER")
        if self._bound is not None:  # scrubbed, and each attribute within its budget
            self._bound(semconv.CRM_REQUESTS, attributes)  # type: ignore[arg-type]
        self._requests.add(1, attributes)
        if failed:
            self._errors.add(1, attributes)
        if span.end_time is not None and span.start_time is not None:
            self._duration.record((span.end_time - span.start_time) / 1e9, attributes)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _exception_type(span: ReadableSpan) -> str | None:
    for event in span.events:
        if event.name == "exception" and event.attributes:
            value = event.attributes.get(semconv.EXCEPTION_TYPE)
            if value:
                return str(value)
    return None
