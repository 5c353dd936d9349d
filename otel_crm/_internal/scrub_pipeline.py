"""Where scrubbing meets the pipeline: spans on the export thread, log records before export.

Spans are rewritten once, on the export thread (only kept spans get there): the instrumentations'
known deviations corrected (corrections.py), SQL literals in ``db.query.text`` replaced by ``?``
(unless ``capture_db_literals``), then secrets and personal data scrubbed.
Fail closed: an item whose rewriting fails is dropped and counted, never exported unscrubbed.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

from opentelemetry import metrics
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.metrics import Counter
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, Status

from otel_crm._internal import accounting, semconv
from otel_crm._internal.corrections import correct_readable_span, with_dropped, with_dropped_list
from otel_crm._internal.safety import report_internal_error, telemetry_dropped_counter
from otel_crm._internal.scrubbing import Scrubber
from otel_crm._internal.sdk_compat import attributes_dict, instrumentation_info, span_parts
from otel_crm._internal.sql_sanitize import sanitize_sql

__all__ = ["ScrubbingLogProcessor", "ScrubbingSpanExporter", "sanitize_query_text"]

_dropped: Counter | None = None  # created on first use


def _fail_closed(signal: str, exc: Exception) -> None:
    """The item is dropped, never exported unscrubbed: count it, report the error (re-raised
    under pytest, see safety)."""
    global _dropped
    # A span was counted as produced when it was queued; a log record is scrubbed before that.
    accounting.drop(signal, "scrub_error", 1, count=False, entered=signal == "logs")
    try:
        if _dropped is None:
            _dropped = telemetry_dropped_counter(metrics.get_meter("otel_crm"))
        _dropped.add(1, {semconv.CRM_SIGNAL: signal, semconv.CRM_DROP_REASON: "scrub_error"})
    except Exception:  # noqa: S110 - counting must never fail the caller
        pass
    report_internal_error("scrubber", exc)


class ScrubbingSpanExporter(SpanExporter):
    """Corrects, sanitizes and scrubs spans on the export thread, then hands them to `inner`.

    A span whose rewriting fails is dropped and counted (fail closed: never exported unscrubbed).
    """

    def __init__(self, inner: SpanExporter, scrubber: Scrubber | None, *, sanitize_sql: bool = True) -> None:
        self._inner = inner
        self._scrubber = scrubber
        self._sanitize_sql = sanitize_sql
        self.dropped = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        scrubbed: list[ReadableSpan] = []
        for original in spans:
            try:
                span = correct_readable_span(original)
                if self._sanitize_sql:
                    span = sanitize_query_text(span)
                scrubbed.append(self.scrub_span(span))
            except Exception as exc:
                self.dropped += 1
                _fail_closed("traces", exc)
        if not scrubbed and spans:
            return SpanExportResult.SUCCESS
        return self._inner.export(scrubbed)

    def scrub_span(self, span: ReadableSpan) -> ReadableSpan:
        """`span` itself when nothing needed scrubbing, else a new ReadableSpan."""
        scrub = self._scrubber
        if scrub is None:
            return span
        name = scrub.scrub_text(span.name)
        # The public properties copy (a new proxy / tuple per access): read the fields when we can.
        original_attributes, events, links = span_parts(span)
        attributes = scrub.scrub_attributes(original_attributes)
        new_events: list[Event] | None = None
        for index, event in enumerate(events):
            event_name = scrub.scrub_text(event.name)
            event_attributes = scrub.scrub_attributes(event.attributes)
            same = event_name is event.name and event_attributes is event.attributes
            if not same and new_events is None:
                new_events = list(events[:index])
            if new_events is not None:
                new_events.append(event if same else Event(
                    event_name, with_dropped(event_attributes, event.dropped_attributes), event.timestamp))
        new_links: list[Link] | None = None
        for index, link in enumerate(links):
            link_attributes = scrub.scrub_attributes(link.attributes)
            same = link_attributes is link.attributes
            if not same and new_links is None:
                new_links = list(links[:index])
            if new_links is not None:
                new_links.append(link if same else Link(
                    link.context, with_dropped(link_attributes, link.dropped_attributes)))
        status = span.status
        if status.description:
            description = scrub.scrub_text(status.description)
            if description is not status.description:
                status = Status(status.status_code, description)
        if (name is span.name and attributes is original_attributes and new_events is None
                and new_links is None and status is span.status):
            return span
        return ReadableSpan(
            name=name, context=span.context, parent=span.parent, resource=span.resource,
            attributes=with_dropped(attributes, span.dropped_attributes),
            events=with_dropped_list(events if new_events is None else new_events, span.dropped_events),
            links=with_dropped_list(links if new_links is None else new_links, span.dropped_links),
            kind=span.kind, instrumentation_info=instrumentation_info(span),
            status=status, start_time=span.start_time, end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))


def sanitize_query_text(span: ReadableSpan) -> ReadableSpan:
    """`span` with the literals of its ``db.query.text`` replaced by ``?`` (the database conventions'
    default), whichever instrumentation wrote it; `span` itself when there is nothing to replace."""
    attributes, _events, _links = span_parts(span)
    if not attributes:
        return span
    text = attributes.get(semconv.DB_QUERY_TEXT)
    if not isinstance(text, str):
        return span
    system = attributes.get(semconv.DB_SYSTEM_NAME)
    clean = sanitize_sql(text, system=system if isinstance(system, str) else None)
    if clean == text:
        return span
    rewritten = {**attributes_dict(attributes), semconv.DB_QUERY_TEXT: clean}
    return ReadableSpan(
        name=span.name, context=span.context, parent=span.parent, resource=span.resource,
        attributes=with_dropped(rewritten, span.dropped_attributes), events=span.events, links=span.links,
        kind=span.kind, instrumentation_info=instrumentation_info(span), status=span.status,
        start_time=span.start_time, end_time=span.end_time, instrumentation_scope=span.instrumentation_scope)


class ScrubbingLogProcessor(LogRecordProcessor):
    """Scrubs a log record's body and attributes in place (records are mutable in on_emit), then
    forwards it to `inner`. A record whose scrubbing fails is dropped and counted."""

    def __init__(self, inner: LogRecordProcessor, scrubber: Scrubber) -> None:
        self._inner = inner
        self._scrubber = scrubber
        self.dropped = 0

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        try:
            self.scrub_record(log_record)
        except Exception as exc:
            self.dropped += 1
            _fail_closed("logs", exc)
            return
        self._inner.on_emit(log_record)

    def scrub_record(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        body = record.body
        if body is not None:
            new_body = self._scrubber.scrub_body(body)
            if new_body is not body:
                record.body = new_body
        attributes = record.attributes
        scrubbed = self._scrubber.scrub_attributes(attributes)
        if scrubbed is not attributes and scrubbed is not None:
            if isinstance(attributes, MutableMapping):
                for key, value in scrubbed.items():
                    if value is not attributes.get(key):
                        attributes[key] = value
            else:
                record.attributes = scrubbed

    def enabled(self, *, context: Context | None = None,
                instrumentation_scope: InstrumentationScope | None = None,
                severity_number: SeverityNumber | None = None, event_name: str | None = None) -> bool:
        return bool(self._inner.enabled(context=context, instrumentation_scope=instrumentation_scope,
                                        severity_number=severity_number, event_name=event_name))

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))
