"""The stdout formats (JSON line, scrubbed text), the lazily flushing handler, the handler the
settings ask for."""

from __future__ import annotations

import calendar
import io
import json
import logging
import math
import sys
import time
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import otel_crm
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.stdout import (
    REQUEST_FIELDS,
    JsonFormatter,
    LazyFlushStreamHandler,
    ScrubbingTextFormatter,
    stdout_handler,
)
from tests.support.processes import wait_until


def _formatted(logger: logging.Logger, formatter: JsonFormatter, emit) -> dict:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        emit()
    finally:
        logger.removeHandler(handler)
    return json.loads(stream.getvalue().strip().splitlines()[-1])


def test_json_line_has_the_fields_ops_search_by() -> None:
    logger = logging.getLogger("test.json")
    formatter = JsonFormatter(service="crm", environment="prod", capture_user_id=False)
    tracer = TracerProvider().get_tracer("t")
    with otel_crm.tenant_context("acme", user_id="u-1"), tracer.start_as_current_span("req") as span:
        line = _formatted(logger, formatter, lambda: logger.info("hello %s", "world"))
    assert line["message"] == "hello world" and line["level"] == "info" and line["logger"] == "test.json"
    assert line["service"] == "crm" and line["environment"] == "prod"
    assert line["correlation_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")
    assert line["tenant_id"] == "acme" and "user_id" not in line
    assert line["timestamp"][-1] == "Z" and line["timestamp"][19] == "." and len(line["timestamp"]) == 24


def test_user_id_only_when_enabled_and_exception_fields() -> None:
    logger = logging.getLogger("test.json2")
    formatter = JsonFormatter(service="crm", environment="prod", capture_user_id=True,
                              scrub=lambda text: text.replace("s3cret", "[REDACTED]"))

    def fail() -> None:
        try:
            raise KeyError("s3cret")
        except KeyError:
            logger.exception("import failed")

    with otel_crm.tenant_context("acme", user_id="u-1"):
        line = _formatted(logger, formatter, fail)
    assert line["user_id"] == "u-1"
    assert line["exception_type"] == "KeyError" and "[REDACTED]" in line["exception_message"]
    assert "s3cret" not in json.dumps(line) and "Traceback" in line["stack_trace"]


def test_access_fields_are_copied() -> None:
    logger = logging.getLogger("test.access")
    formatter = JsonFormatter(service="crm", environment="prod")
    line = _formatted(logger, formatter, lambda: logger.info(
        "GET /leads 200", extra={"method": "GET", "path": "/leads", "status_code": 200, "latency_ms": 1.5}))
    assert (line["method"], line["path"], line["status_code"], line["latency_ms"]) == ("GET", "/leads", 200, 1.5)


def test_line_is_what_format_writes_for_the_same_record() -> None:
    """`line()` is how the access line skips the LogRecord: it must not change a byte."""
    from otel_crm._internal.scrubbing import Scrubber

    scrubber = Scrubber.from_settings(resolve_settings({}))
    formatter = JsonFormatter(service="crm", environment="production", scrub=scrubber.scrub_text)
    span = TracerProvider().get_tracer("t").start_span("GET /leads")
    path = "/leads/export?email=jane@example.com"
    with otel_crm.tenant_context("acme"), trace.use_span(span, end_on_exit=True):
        record = logging.LogRecord("otel_crm.access", logging.INFO, __file__, 1, "%s %s %s",
                                   ("GET", path, 200), None)
        record.__dict__.update(method="GET", path=path, status_code=200, latency_ms=1.25)
        slow = formatter.format(record)
        fast = formatter.line(f"GET {path} 200", "otel_crm.access",
                              {"method": "GET", "path": path, "status_code": 200, "latency_ms": 1.25},
                              span_context=span.get_span_context(), created=record.created)
    assert fast == slow
    line = json.loads(fast)
    assert line["tenant_id"] == "acme" and "jane@example.com" not in fast, "tenant kept, email scrubbed"


_FIELD_VALUES = [
    {"method": "GET", "path": "/leads", "status_code": 200, "latency_ms": 1.25},
    {"method": "PÖST", "path": '/a"b\\c\u2028d\x00e\x7f\U0001f600/ü', "status_code": 404, "latency_ms": 0.1},
    {"method": "GET", "path": "/x\x1b[31mred", "status_code": 10**20, "latency_ms": 1e-07},
    {"method": "GET", "path": "/", "status_code": -1, "latency_ms": 1e22},
    {"method": "GET", "path": "/", "status_code": 200, "latency_ms": 0.0},
    {"route \"k\"\n": "/leads", "path": "/", "n": 3},  # names other than the request fields
    # types the text writer leaves to the encoder: bool, None, NaN, infinity, a str subclass
    {"method": "GET", "path": "/", "status_code": True, "latency_ms": float("nan")},
    {"method": "GET", "path": None, "status_code": 200, "latency_ms": float("inf")},
    {"method": type("S", (str,), {})("GET"), "path": "/", "status_code": 200, "latency_ms": 2.5},
]


@pytest.mark.parametrize("fields", _FIELD_VALUES)
@pytest.mark.parametrize("scrubbed", [False, True])
@pytest.mark.parametrize("sampling", [(traced, decision) for traced in ("none", "sampled", "unsampled")
                                      for decision in (None, True, False)])
@pytest.mark.parametrize("tenant", [None, ("acme", None), ("t\u00e9n\"ant", "u-1")])
def test_line_text_is_byte_for_byte_the_encoded_payload(
        fields: dict, scrubbed: bool, sampling: tuple[str, bool | None],  # type: ignore[type-arg]
        tenant: tuple[str, str | None] | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """`line()` writes its JSON as text (no dict, no encoder): every key, value and escape must be
    what the JSON encoder writes for the same payload."""
    traced, decision = sampling
    runtime = type("Runtime", (), {"trace_sampled": lambda self, trace_id, flag: decision})()
    monkeypatch.setattr("otel_crm._internal.stdout.current_runtime", lambda: runtime)
    scrub = (lambda text: text.replace("leads", "[REDACTED]")) if scrubbed else None
    formatter = JsonFormatter(service='crm "q"', environment="prod\u00fc", capture_user_id=True, scrub=scrub)
    if traced == "none":
        span_context = trace.INVALID_SPAN_CONTEXT
    else:
        flags = trace.TraceFlags(1 if traced == "sampled" else 0)
        span_context = trace.SpanContext(0x1F, 0x2A, False, flags)
    message = "GET /leads \x1b[1m200\n"
    with otel_crm.tenant_context(*(tenant[:1] if tenant else (None,)), user_id=tenant[1] if tenant else None):
        for created in (1700000000.0, 1700000000.999, 1700000001.5):
            fast = formatter.line(message, "otel_crm.access", fields, span_context=span_context, created=created)
            reference = formatter._line_encoded(message, "otel_crm.access", fields, span_context, created)
            assert fast == reference
            if list(fields) == list(REQUEST_FIELDS) and _access_line_types(fields):
                method, path, status, latency = fields.values()
                assert formatter.access_line(method, path, status, latency, span_context=span_context,
                                             created=created) == formatter._line_encoded(
                    f"{method} {path} {status}", "otel_crm.access", fields, span_context, created)
    decoded = json.loads(fast)
    assert decoded["message"] == ("GET /[REDACTED] 200\n" if scrubbed else "GET /leads 200\n")
    assert list(decoded)[:6] == ["timestamp", "level", "message", "logger", "service", "environment"]
    assert decoded.get("trace_sampled") == (decision if traced != "none" else None)


def _access_line_types(fields: dict[str, Any]) -> bool:
    """The types `access._log_access` hands to `access_line` (else `line`)."""
    method, path, status, latency = fields.values()
    return (type(method) is str and type(path) is str and type(status) is int and type(latency) is float
            and math.isfinite(latency))


def test_access_line_is_line_for_its_types_and_is_used() -> None:
    assert sum(_access_line_types(f) for f in _FIELD_VALUES if list(f) == list(REQUEST_FIELDS)) == 5
    formatter = JsonFormatter(service="crm", environment="prod")
    line = formatter.access_line("GET", "/", 200, 0.5, span_context=trace.INVALID_SPAN_CONTEXT)
    assert json.loads(line)["message"] == "GET / 200" and json.loads(line)["latency_ms"] == 0.5


def test_line_without_a_created_time_stamps_now() -> None:
    formatter = JsonFormatter(service="crm", environment="prod")
    before = time.time()
    line = json.loads(formatter.line("m", "otel_crm.access", {}, span_context=trace.INVALID_SPAN_CONTEXT))
    stamp = calendar.timegm(time.strptime(line["timestamp"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert int(before) <= stamp <= time.time() and line["logger"] == "otel_crm.access"


def test_stdout_handler_follows_the_log_format_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    scrub = lambda text: text.replace("s3cret", "[REDACTED]")  # noqa: E731
    json_handler = stdout_handler(resolve_settings({}, log_format="json", service_name="crm"), logging.INFO,
                                  scrub=scrub)
    assert isinstance(json_handler, LazyFlushStreamHandler) and json_handler.stream is sys.stdout
    assert isinstance(json_handler.formatter, JsonFormatter) and json_handler.level == logging.INFO
    text_handler = stdout_handler(resolve_settings({}, log_format="text"), logging.DEBUG, scrub=scrub)
    assert text_handler is not None and isinstance(text_handler.formatter, ScrubbingTextFormatter)
    record = logging.LogRecord("crm", logging.INFO, __file__, 1, "token %s", ("s3cret",), None)
    assert json.loads(json_handler.format(record))["message"] == "token [REDACTED]"
    assert text_handler.format(record).endswith("INFO [crm] token [REDACTED]")
    assert stdout_handler(resolve_settings({}, log_format="none"), logging.INFO) is None


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_lazy_flush_flushes_warnings_at_once_and_info_lines_soon_after() -> None:
    stream = _CountingStream()
    handler = LazyFlushStreamHandler(stream)
    handler.flush_interval = 0.2
    handler._last_flush = float("inf")  # type: ignore[attr-defined]  # "just flushed": no interval elapsed
    logger = logging.Logger("lazy-flush")
    logger.addHandler(handler)
    logger.info("one")
    handler.write_line("two")
    assert stream.getvalue() == "one\ntwo\n" and stream.flushes == 0, "info lines are not flushed one by one"
    wait_until(lambda: stream.flushes == 1, 5, "the timer's flush of the idle handler's info lines")
    logger.warning("three")
    assert stream.flushes == 2, "a warning is flushed at once"


def test_ansi_escapes_are_stripped_from_json_and_text_lines() -> None:
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '"%s" %s',
                               ("\x1b[33mGET /x HTTP/1.1\x1b[0m", "\x1b[1m\x1b[31m404\x1b[0m"), None)
    line = json.loads(JsonFormatter(service="s", environment="e").format(record))
    assert line["message"] == '"GET /x HTTP/1.1" 404'
    text = ScrubbingTextFormatter("%(message)s").format(record)
    assert text == '"GET /x HTTP/1.1" 404'


def test_a_line_inside_a_request_whose_server_span_was_detached_keeps_its_trace() -> None:
    from otel_crm._internal.request_span import server_spans

    logger = logging.getLogger("test.detached")
    formatter = JsonFormatter(service="crm", environment="prod")
    span = TracerProvider().get_tracer("t").start_span("GET /x", kind=trace.SpanKind.SERVER)
    span.end()  # Django's instrumentation ends and detaches it before `Not Found: /x` is logged
    token = server_spans.set([span])  # type: ignore[list-item]
    try:
        line = _formatted(logger, formatter, lambda: logger.warning("Not Found: /x"))
    finally:
        server_spans.reset(token)
    assert line["correlation_id"] == format(span.get_span_context().trace_id, "032x")
    outside = _formatted(logger, formatter, lambda: logger.warning("after the request"))
    assert "correlation_id" not in outside


def test_text_format_keeps_one_record_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decoded %0A (or %0D, ESC…) in a path cannot forge a second line, nor colour a terminal; a
    stack trace stays on its record's line."""
    from otel_crm._internal.access import ACCESS_LOGGER
    from otel_crm._internal.scrubbing import Scrubber

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    settings = resolve_settings({}, log_format="text")
    handler = stdout_handler(settings, logging.INFO, scrub=Scrubber().scrub_text)
    assert handler is not None and isinstance(handler.formatter, ScrubbingTextFormatter)
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    forged = "2026-01-01 00:00:00,000 INFO [otel_crm] admin login ok"
    path = f"/leads/1\n{forged}\r{forged}\x1b[2J\u2028{forged}"  # what WSGI hands over for %0A, %0D…
    try:
        logger.warning("GET %s 404", path)
        try:
            raise ValueError(f"bad id\n{forged}")
        except ValueError:
            logger.exception("failed")
        handler.flush()
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    # ANSI sequences are stripped (#11); the other control characters are escaped
    assert "/leads/1\\n2026-01-01" in lines[0] and "\\r2026" in lines[0] and "\x1b" not in lines[0]
    assert "\\u2028" in lines[0]
    assert lines[1].count("Traceback") == 1 and "ValueError: bad id\\n2026" in lines[1]
    assert not any(line.startswith("2026-01-01 00:00:00,000") for line in lines)
