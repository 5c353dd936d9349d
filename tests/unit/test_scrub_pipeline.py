"""Scrubbing in the pipeline: spans on the export thread, log records before export; fail closed."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode

from otel_crm._internal.scrub_pipeline import ScrubbingLogProcessor, ScrubbingSpanExporter
from otel_crm._internal.scrubbing import Scrubber
from tests.unit.test_scrubbing import JWT, SECRETS


def _span_pipeline(scrubber: Scrubber, **provider: object) -> tuple[TracerProvider, InMemorySpanExporter,
                                                                    ScrubbingSpanExporter]:
    memory = InMemorySpanExporter()
    exporter = ScrubbingSpanExporter(memory, scrubber)
    tracer_provider = TracerProvider(resource=Resource.create({"owner.email": "ops@example.com"}),
                                     **provider)  # type: ignore[arg-type]
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider, memory, exporter


def _secrets_of(span: ReadableSpan) -> str:
    return json.dumps(json.loads(span.to_json()) | {"resource": None})


def test_spans_are_scrubbed_everywhere(scrubber: Scrubber) -> None:
    tracer_provider, memory, _ = _span_pipeline(scrubber)
    tracer = tracer_provider.get_tracer("t")
    with tracer.start_as_current_span("linked") as other:
        pass
    link = Link(other.get_span_context(), {"note": "from a@b.com", "token": "t"})
    everything = " | ".join(context.format(secret) for context, secret in SECRETS)
    with tracer.start_as_current_span(f"send to {SECRETS[0][1]}", links=[link]) as span:
        span.set_attribute("crm.note", everything)
        span.set_attribute("url.full", "https://x.io/cb?access_token=abc123&state=ok")
        span.set_attribute("http.request.header.authorization", ("Bearer abc",))
        span.set_attribute("crm.contact.phones", ["+44 20 7946 0958", "n/a"])
        span.set_attribute("http.response.status_code", 200)
        span.add_event(f"mailed {SECRETS[1][1]}", {"detail": "card 4111 1111 1111 1111"})
        try:
            raise ValueError(f"payment failed for card 4111-1111-1111-1111 ({JWT}) user x@y.com")
        except ValueError as exc:
            span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, "declined for x@y.com"))
    exported = {s.name: s for s in memory.get_finished_spans()}
    assert set(exported) == {"linked", "send to [REDACTED:email]"}
    scrubbed = exported["send to [REDACTED:email]"]
    text = _secrets_of(scrubbed)
    for _, secret in SECRETS:
        assert secret not in text, secret
    assert JWT not in text and "x@y.com" not in text and "abc123" not in text
    attributes = scrubbed.attributes or {}
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.full"] == "https://x.io/cb?access_token=[REDACTED:secret]&state=ok"
    assert attributes["http.request.header.authorization"] == ("[REDACTED]",)
    assert attributes["crm.contact.phones"] == ("[REDACTED:phone]", "n/a")
    exception = scrubbed.events[1].attributes or {}
    assert exception["exception.type"] == "ValueError"
    assert "[REDACTED:card]" in str(exception["exception.message"])
    assert "[REDACTED:card]" in str(exception["exception.stacktrace"])
    assert scrubbed.links[0].attributes == {"note": "from [REDACTED:email]", "token": "[REDACTED]"}
    assert scrubbed.status.description == "declined for [REDACTED:email]"
    assert scrubbed.status.status_code is StatusCode.ERROR
    # Everything else is carried over; the resource is not scrubbed (configuration, not data).
    assert scrubbed.resource.attributes["owner.email"] == "ops@example.com"
    assert scrubbed.context is not None and scrubbed.context.trace_id == span.get_span_context().trace_id
    assert (scrubbed.start_time, scrubbed.end_time, scrubbed.kind) == (
        span.start_time, span.end_time, span.kind)  # type: ignore[attr-defined]
    assert scrubbed.instrumentation_scope is not None and scrubbed.instrumentation_scope.name == "t"


def test_clean_span_is_exported_as_is(scrubber: Scrubber) -> None:
    tracer_provider, memory, exporter = _span_pipeline(scrubber)
    with tracer_provider.get_tracer("t").start_as_current_span("GET /contacts/{id}",
                                                               attributes={"http.route": "/contacts/{id}"}):
        pass
    (span,) = memory.get_finished_spans()
    assert exporter.scrub_span(span) is span


def test_dropped_counts_survive_scrubbing(scrubber: Scrubber) -> None:
    limits = SpanLimits(max_span_attributes=2, max_events=1, max_event_attributes=1)
    tracer_provider, memory, _ = _span_pipeline(scrubber, span_limits=limits)
    with tracer_provider.get_tracer("t").start_as_current_span("s") as span:
        for index in range(4):
            span.set_attribute(f"a{index}", f"mail {index}@x.com")
        span.add_event("e1")
        span.add_event("e2 a@b.com", {"k": "a@b.com", "j": "x"})
    (exported,) = memory.get_finished_spans()
    assert exported.attributes == {"a2": "mail [REDACTED:email]", "a3": "mail [REDACTED:email]"}
    assert exported.dropped_attributes == 2 and exported.dropped_events == 1
    assert exported.events[0].name == "e2 [REDACTED:email]"
    assert exported.events[0].dropped_attributes == 1


def test_span_scrubbing_failure_drops_the_span(scrubber: Scrubber, no_reraise: None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    tracer_provider, memory, exporter = _span_pipeline(scrubber)
    tracer = tracer_provider.get_tracer("t")
    real = scrubber.scrub_text

    def failing(text: str) -> str:
        if "boom" in text:
            raise RuntimeError("scrubber bug")
        return real(text)

    monkeypatch.setattr(scrubber, "scrub_text", failing)
    with tracer.start_as_current_span("boom a@b.com"):
        pass
    with tracer.start_as_current_span("fine"):
        pass
    assert [s.name for s in memory.get_finished_spans()] == ["fine"]
    assert exporter.dropped == 1


def test_span_scrubbing_failure_reraises_under_pytest(scrubber: Scrubber,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    memory = InMemorySpanExporter()
    exporter = ScrubbingSpanExporter(memory, scrubber)
    monkeypatch.setattr(scrubber, "scrub_text", lambda text: 1 / 0)
    span = ReadableSpan("x")
    with pytest.raises(ZeroDivisionError):
        exporter.export([span])
    assert memory.get_finished_spans() == () and exporter.dropped == 1


# --- logs ----------------------------------------------------------------------------------------
def _log_pipeline(scrubber: Scrubber) -> tuple[LoggerProvider, InMemoryLogRecordExporter,
                                               ScrubbingLogProcessor]:
    memory = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    processor = ScrubbingLogProcessor(SimpleLogRecordProcessor(memory), scrubber)
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(processor)
    return logger_provider, memory, processor


def test_log_records_are_scrubbed(scrubber: Scrubber) -> None:
    logger_provider, memory, _ = _log_pipeline(scrubber)
    handler = LoggingHandler(logger_provider=logger_provider)
    logger = logging.getLogger("test.scrubbing")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        everything = " | ".join(context.format(secret) for context, secret in SECRETS)
        logger.warning("login failed: %s", everything, extra={"crm.email": "a@b.com", "password": "p"})
        try:
            raise KeyError(f"no contact {SECRETS[0][1]} card 4111111111111111")
        except KeyError:
            logger.exception("lookup of %s failed", "x@y.com")
    finally:
        logger.removeHandler(handler)
    otel_logger = logger_provider.get_logger("t")
    otel_logger.emit(body={"event": "signup", "email": "z@z.io", "nested": [{"token": "abc"}]},
                     attributes={"url.query": "api_key=abc123"})
    records = [r.log_record for r in memory.get_finished_logs()]
    assert len(records) == 3
    dumped = json.dumps([[r.body, dict(r.attributes or {})] for r in records], default=str)
    for _, secret in SECRETS:
        assert secret not in dumped, secret
    for leaked in ("a@b.com", "x@y.com", "z@z.io", "abc123", "4111111111111111"):
        assert leaked not in dumped
    assert (records[0].attributes or {})["password"] == "[REDACTED]"
    assert "[REDACTED:card]" in str((records[1].attributes or {})["exception.stacktrace"])
    assert records[2].body == {"event": "signup", "email": "[REDACTED:email]",
                               "nested": [{"token": "[REDACTED]"}]}
    assert (records[2].attributes or {})["url.query"] == "api_key=[REDACTED:secret]"


def test_log_scrubbing_failure_drops_the_record(scrubber: Scrubber, no_reraise: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    logger_provider, memory, processor = _log_pipeline(scrubber)
    monkeypatch.setattr(scrubber, "scrub_body", lambda body: 1 / 0)
    logger_provider.get_logger("t").emit(body="secret a@b.com")
    assert memory.get_finished_logs() == () and processor.dropped == 1


# --- cost: linear, bounded -----------------------------------------------------------------------


def test_query_text_literals_are_replaced_on_export_unless_captured() -> None:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    from otel_crm._internal.scrub_pipeline import ScrubbingSpanExporter

    def span() -> ReadableSpan:
        return ReadableSpan(name="INSERT leads", kind=SpanKind.CLIENT,
                            context=SpanContext(1, 2, False, TraceFlags(1)),
                            attributes={"db.system.name": "sqlite",
                                        "db.query.text": "INSERT INTO leads (name, score) VALUES ('Acme', 80)"})

    sanitized, captured = InMemorySpanExporter(), InMemorySpanExporter()
    ScrubbingSpanExporter(sanitized, None).export([span()])
    ScrubbingSpanExporter(captured, None, sanitize_sql=False).export([span()])
    (one,) = sanitized.get_finished_spans()
    assert one.attributes["db.query.text"] == "INSERT INTO leads (name, score) VALUES (?, ?)"
    (other,) = captured.get_finished_spans()
    assert "'Acme', 80" in str(other.attributes["db.query.text"])


def test_unrouted_server_span_is_named_after_its_method_on_export() -> None:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    from otel_crm._internal.scrub_pipeline import ScrubbingSpanExporter

    exporter = InMemorySpanExporter()
    ScrubbingSpanExporter(exporter, None).export([ReadableSpan(
        name="GET /missing/page", kind=SpanKind.SERVER, context=SpanContext(1, 2, False, TraceFlags(1)),
        attributes={"http.request.method": "GET", "url.path": "/missing/page",
                    "http.response.status_code": 404})])
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET"
