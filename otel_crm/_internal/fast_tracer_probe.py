"""The start-up probe of the cheaper span path (fast_tracer.py, fast_span.py): part of the
SDK-compatibility layer. The same script runs through the SDK's tracer provider and through
otel_crm's; spans made both ways must have the same fields (their attribute and list containers'
too), the processors must see the same calls, and ended spans must ignore every mutator."""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk import trace as sdk
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from otel_crm._internal import semconv
from otel_crm._internal.fast_tracer import FastTracerProvider

__all__ = ["same_spans"]

_sdk_log = logging.getLogger(sdk.__name__)


class _Ids(IdGenerator):
    def __init__(self) -> None:
        self._ids = iter(range(1, 1000))

    def generate_span_id(self) -> int:
        return next(self._ids)

    def generate_trace_id(self) -> int:
        return next(self._ids) << 70

    def is_trace_id_random(self) -> bool:
        return True


def _value(key: str, value: Any) -> Any:
    fields: Any = value
    if isinstance(value, BoundedAttributes):  # (its fields' names and types: a new field is a mismatch)
        return ("attributes", dict(value), list(value), value.maxlen, value.max_value_len, value.dropped,
                fields._immutable, _kinds(value))
    if isinstance(value, BoundedList):
        if not len(value) and not value.dropped:  # empty: the SDK's own, or FastSpan's shared NONE_YET
            return ("list", [], "empty", _kinds(value))
        return ("list", [_fields(item) if hasattr(item, "__dict__") else item for item in value],
                fields._dq.maxlen, value.dropped, _kinds(value))
    if type(value) is type(threading.Lock()):
        return "lock"
    if key in ("_timestamp", "_end_time") and isinstance(value, int) and value > 10**15:  # time_ns()
        return "now"
    if key in ("_span_processor", "_limits"):
        return repr(value) if key == "_limits" else type(value)
    if isinstance(value, Resource):
        return dict(value.attributes), value.schema_url
    if isinstance(value, Status):
        return value.status_code, value.description
    if type(value) in (sdk.Event, Link):
        return _fields(value)
    return value


def _kinds(value: object) -> list[tuple[str, str]]:
    return sorted((key, type(item).__name__) for key, item in vars(value).items())


class _Calls(SpanProcessor):
    """Records the hooks the processors see (a flattened dispatch must make the same calls)."""

    def __init__(self, calls: list[tuple[str, str, str]], tag: str) -> None:
        self._calls, self._tag = calls, tag

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._calls.append((self._tag, "on_start", span.name))

    def _on_ending(self, span: Span) -> None:
        self._calls.append((self._tag, "_on_ending", span.name))

    def on_end(self, span: ReadableSpan) -> None:
        self._calls.append((self._tag, "on_end", span.name))


class _Quiet(SpanProcessor):  # hooks that do nothing (the dispatch skips them)
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        return None


def _fields(span: object) -> dict[str, Any]:
    return {key: _value(key, value) for key, value in vars(span).items()}


def _mutate_ended(span: Any, remote: SpanContext) -> None:
    span.update_name("x")
    span.set_attribute("z", 1)
    span.set_attributes({"z": 1})
    span.add_event("z")
    span.add_link(remote)
    span.set_status(StatusCode.OK)
    span.end()
    span.record_exception(ValueError("v"))


def _script(provider: sdk.TracerProvider, exporter: InMemorySpanExporter) -> list[Any]:
    tracer = provider.get_tracer("probe", "1")
    remote = SpanContext(7 << 80, 9, True, TraceFlags(0), TraceState([("k", "v")]))
    root = tracer.start_span("root", kind=SpanKind.SERVER, attributes={"a": 1, "b": "long value", "c": 3},
                             links=[Link(remote, {"l": 1})], start_time=5)
    child = tracer.start_span("child", trace_api.set_span_in_context(root), attributes={"q": "abcd", "n": 2},
                              start_time=6)  # plain attributes within both limits: copied as they are
    dropped = tracer.start_span("dropped", trace_api.set_span_in_context(trace_api.NonRecordingSpan(remote)))
    root.set_attribute("c", 4)  # an existing key (moves last), then a new one beyond the limit
    root.set_attribute("d", "ok")
    made: list[Any] = [_fields(root), _fields(child), dropped.get_span_context(), type(dropped).__name__]
    child.add_event("e", {"x": 1}, timestamp=7)
    child.add_link(remote)  # a span without start links gets its own list, with the links' limit
    child.set_attributes({"q": "ab", "p": 1})  # plain: one take of the locks (q moves last, the oldest dropped)
    root.set_attributes({"r": [1, 2]})  # a value to clean: the SDK's path
    child.set_status(StatusCode.ERROR, "bad")
    calls: list[tuple[str, str, str]] = []
    provider.add_span_processor(_Calls(calls, "late"))  # added while spans are open: called from now on
    child.end(8)
    with contextlib.suppress(ValueError), tracer.start_as_current_span("raises", start_time=8, record_exception=False):
        raise ValueError("probe")  # the exception path: the SDK's generators replayed
    root.end(9)
    made.append(calls)
    for span in exporter.get_finished_spans():
        before = _fields(span)
        if isinstance(span, sdk.Span):  # ours: the span itself, which no mutator may change now
            _mutate_ended(span, remote)
            if _fields(span) != before:
                return []
            copied = vars(sdk.ReadableSpan("probe", resource=provider.resource))  # what a copy has
            before = {key: before[key] for key in copied}
        made.append(before)
    return made


def _build(cls: type[sdk.TracerProvider], sampler: sampling.Sampler) -> tuple[sdk.TracerProvider,
                                                                              InMemorySpanExporter]:
    provider = cls(sampler=sampler, resource=Resource({semconv.SERVICE_NAME: "probe"}), shutdown_on_exit=False,
                   id_generator=_Ids(), span_limits=sdk.SpanLimits(max_span_attributes=2, max_attribute_length=4,
                                                               max_events=3, max_links=5))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(_Quiet())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def same_spans() -> bool:
    """Whether this SDK's spans and otel_crm's are the same (the module docstring)."""
    # Readable members the processors use must be the ReadableSpan's own (a Span property that
    # computed something live would make handing the span itself different from the copy).
    readable = {name for name in dir(sdk.ReadableSpan) if not name.startswith("__")} - {"get_span_context"}
    if any(inspect.getattr_static(sdk._Span, name) is not inspect.getattr_static(sdk.ReadableSpan, name)
           for name in readable):
        return False

    def quiet(record: logging.LogRecord) -> bool:  # limits and mutators of ended spans warn: not the probe's
        return record.thread != threading.get_ident()

    loggers = (_sdk_log, logging.getLogger("opentelemetry.attributes"))
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        for sampler in (sampling.ALWAYS_ON, sampling.ParentBased(sampling.ALWAYS_ON), sampling.TraceIdRatioBased(1.0)):
            sdk_made = _script(*_build(sdk.TracerProvider, sampler))
            fast_made = _script(*_build(FastTracerProvider, sampler))
            # The SDK's processors get a ReadableSpan copy, ours the span: the copy's fields must match.
            if not fast_made or sdk_made != fast_made:
                return False
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
    return True

