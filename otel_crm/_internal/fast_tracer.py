"""A cheaper span path through the SDK's own classes: the third part of the SDK-compatibility layer
(with sdk_compat.py and sdk_fast_paths.py, the only modules allowed private SDK names).

otel_crm's tracer provider hands out the SDK's tracers and spans with these methods replaced:

- ``start_span``: the SDK's steps without the keyword plumbing: the sampler's answer computed
  directly for the samplers otel_crm's modes install (``ALWAYS_ON``; ``ParentBased(ALWAYS_ON)``
  with its default delegates), any other sampler asked as usual; trace flags precomputed; the
  span's fields set at once; the SDK's self-metrics hook skipped when it is the no-op one.
- ``Span.end``: hands the span itself to ``on_end`` instead of the ``ReadableSpan`` copy the SDK
  makes on every end. The copy shares the span's attributes, events and links and snapshots the
  rest; after ``end`` nothing public can change any of them (``_check_span_ended``, immutable
  attributes), so processors and exporters read the same values either way.
- ``Span.set_attribute``: a plain value goes to the SDK's own insert without the cleaning call.
- ``start_as_current_span``: a class instead of a generator. The exception path (rare) replays the
  SDK's own generators, so the recorded exception, its stack trace and the status are the SDK's.

Every assumption is probed once, when the first provider is built (``tracer_provider_class``):
spans made both ways must have the same fields, and ended spans must ignore every mutator. On any
mismatch the plain SDK classes are used and one warning says so.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from time import time_ns
from types import MappingProxyType, TracebackType
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk import trace as sdk
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics, noop
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util import types
from opentelemetry.util._decorator import _AgnosticContextManager

from otel_crm._internal import semconv
from otel_crm._internal.sdk_compat import check_feature

__all__ = ["FastSpan", "FastTracer", "FastTracerProvider", "tracer_provider_class"]

_sdk_log = logging.getLogger(sdk.__name__)  # the SDK's warnings keep their logger
_FLAGS = tuple(TraceFlags(bits) for bits in range(4))  # [sampled | random-trace-id]
_TRACE_ID_MAX, _SPAN_ID_MAX = 2**128 - 1, 2**64 - 1
_UNSET: Status = inspect.signature(sdk.ReadableSpan.__init__).parameters["status"].default
_GENERIC, _ALWAYS_ON, _PARENT_ON = 0, 1, 2
_PLAIN = frozenset({int, float, bool})
_SAMPLE, _DROP = sampling.Decision.RECORD_AND_SAMPLE, sampling.Decision.DROP
_new, _new_tuple = object.__new__, tuple.__new__
_attach, _detach, _set_value = context_api.attach, context_api.detach, context_api.set_value
_get_current_span = trace_api.get_current_span


def _sampler_mode(sampler: sampling.Sampler) -> int:
    if sampler is sampling.ALWAYS_ON:
        return _ALWAYS_ON
    if type(sampler) is sampling.ParentBased:
        fields: Any = sampler
        if (fields._root is sampling.ALWAYS_ON and fields._remote_parent_sampled is sampling.ALWAYS_ON
                and fields._local_parent_sampled is sampling.ALWAYS_ON
                and fields._remote_parent_not_sampled is sampling.ALWAYS_OFF
                and fields._local_parent_not_sampled is sampling.ALWAYS_OFF):
            return _PARENT_ON
    return _GENERIC


class FastSpan(sdk._Span):
    """The SDK's span; `end` hands the span itself to the processors (see the module docstring), and
    `set_attribute` stores a plain value (str within the limit, int, float, bool) without cleaning it:
    cleaning returns such a value as is."""

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        attributes: Any = self._attributes
        kind, limit = type(value), getattr(attributes, "max_value_len", 0)
        if (type(key) is not str or not key or type(attributes) is not BoundedAttributes or attributes.maxlen == 0
                or not (kind in _PLAIN or (kind is str and (limit is None or len(value) <= limit)))):  # type: ignore[arg-type]
            return super().set_attribute(key, value)
        with self._lock:
            if self._end_time is not None:
                _sdk_log.warning("Setting attribute on ended span.")
                return
            with attributes._lock:
                attributes._setitem_locked(key, value)  # the SDK's insert: order, limit, dropped count
        return None

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._start_time is None:
                raise RuntimeError("Calling end() on a not started span.")
            if self._end_time is not None:
                _sdk_log.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            attributes: Any = self._attributes
            attributes._immutable = True
        if self._record_end_metrics is not noop and self._record_end_metrics:
            self._record_end_metrics()
        processor = self._span_processor
        processor._on_ending(self)
        processor.on_end(self)


FastSpan.__name__ = FastSpan.__qualname__ = "_Span"  # repr() as the SDK's span (`_Span(name=...)`)


class FastTracer(sdk.Tracer):
    """The SDK's tracer (set as the class of the provider's tracers) with a cheaper span start."""

    _crm_mode: tuple[object, int] = (None, _GENERIC)  # (sampler, its mode): recomputed if it changes

    def start_span(self, name: str, context: Context | None = None,  # noqa: PLR0917 - the SDK signature
                   kind: SpanKind = SpanKind.INTERNAL, attributes: types.Attributes = None,
                   links: Sequence[Link] | None = (), start_time: int | None = None,
                   record_exception: bool = True, set_status_on_exception: bool = True) -> trace_api.Span:
        parent: Any = _get_current_span(context).get_span_context()
        sampler = self.sampler
        cached = self._crm_mode
        if cached[0] is not sampler:
            cached = self._crm_mode = (sampler, _sampler_mode(sampler))
        metrics = self._tracer_metrics
        if type(parent) is not SpanContext or not self._tracer_config.is_enabled:
            return super().start_span(name, context, kind, attributes, links, start_time, record_exception,
                                      set_status_on_exception)
        links = links or ()
        ids: IdGenerator = self.id_generator
        if parent[5]:  # is_valid
            trace_id, random_id = parent[0], parent[3] & 2
        else:
            parent, trace_id = None, ids.generate_trace_id()
            random_id = 0
        mode = cached[1]
        if mode == _ALWAYS_ON or (mode == _PARENT_ON and (parent is None or parent[3] & 1)):
            decision = _SAMPLE
            trace_state: TraceState | None = parent[4] if parent is not None else None
            if attributes is not None and type(attributes) is not dict:
                attributes = MappingProxyType(attributes)  # what the SDK's SamplingResult would hold
        elif mode == _PARENT_ON:
            decision, trace_state, attributes = _DROP, parent[4], None
        else:
            result = sampler.should_sample(context, trace_id, name, kind, attributes, links)
            decision, trace_state, attributes = result.decision, result.trace_state, result.attributes
        if parent is None:
            random_id = 2 if ids.is_trace_id_random() else 0
        span_id = ids.generate_span_id()
        span_context: Any = _new_tuple(SpanContext, (
            trace_id, span_id, False, _FLAGS[random_id | (1 if decision is _SAMPLE else 0)],
            trace_state if trace_state is not None else trace_api.DEFAULT_TRACE_STATE,
            0 < trace_id <= _TRACE_ID_MAX and 0 < span_id <= _SPAN_ID_MAX))
        end_metrics = noop if type(metrics) is NoOpTracerMetrics else metrics.start_span(parent, decision)
        if decision is _DROP:
            return trace_api.NonRecordingSpan(context=span_context)
        limits = self._span_limits
        span: Any = _new(FastSpan)
        span._name = name
        span._context = span_context
        span._kind = kind
        span._instrumentation_info = self.instrumentation_info
        span._instrumentation_scope = self._instrumentation_scope
        span._parent = parent
        span._start_time = span._end_time = None
        span._resource = self.resource
        span._status = _UNSET
        span._sampler = sampler
        span._trace_config = None
        span._record_exception = record_exception
        span._set_status_on_exception = set_status_on_exception
        processor = span._span_processor = self.span_processor
        span._limits = limits
        span._lock = threading.Lock()
        span._attributes = BoundedAttributes(limits.max_span_attributes, attributes, immutable=False,
                                             max_value_len=limits.max_span_attribute_length)
        span._events = BoundedList(limits.max_events)
        span._links = span._new_links(links) if links else BoundedList(limits.max_links)
        span._record_end_metrics = end_metrics
        span._start_time = start_time if start_time is not None else time_ns()
        processor.on_start(span, parent_context=context)
        result_span: trace_api.Span = span
        return result_span

    def start_as_current_span(self, name: str, context: Context | None = None,  # noqa: PLR0917
                              kind: SpanKind = SpanKind.INTERNAL, attributes: types.Attributes = None,
                              links: Sequence[Link] | None = (), start_time: int | None = None,
                              record_exception: bool = True, set_status_on_exception: bool = True,
                              end_on_exit: bool = True) -> Any:
        return _CurrentSpan((self, name, context, kind, attributes, links, start_time, record_exception,
                             set_status_on_exception, end_on_exit))


class _Given:
    """The tracer as the replayed SDK generators see it: `start_span` gives the span already started."""

    def __init__(self, span: trace_api.Span) -> None:
        self._span = span

    def start_span(self, **_: Any) -> trace_api.Span:
        return self._span


_Spec = tuple[FastTracer, str, "Context | None", SpanKind, types.Attributes, "Sequence[Link] | None", "int | None",
              bool, bool, bool]


class _CurrentSpan(_AgnosticContextManager[trace_api.Span]):
    """`start_as_current_span`'s context manager and decorator (sync and async: the SDK's
    `__call__`, so a decorated function's frames are the SDK's too)."""

    _span: Any  # set on entry
    _token: Any

    def __init__(self, spec: _Spec) -> None:  # the generator-based parents' fields are not used
        self._spec: _Spec | None = spec
        self._kept = spec

    def _recreate_cm(self) -> _CurrentSpan:
        spec = self._spec
        if spec is None:  # as the SDK's: a manager is not reusable once entered
            raise AttributeError("args")
        return _CurrentSpan(spec)

    def __enter__(self) -> trace_api.Span:
        spec = self._spec
        if spec is None:
            raise AttributeError("args")
        self._spec = None
        tracer, name, context, kind, attributes, links, start_time, record, set_status, _ = spec
        span = self._span = tracer.start_span(name, context, kind, attributes, links, start_time, record, set_status)
        self._token = _attach(_set_value(_SPAN_KEY, span))
        return span

    def __exit__(self, typ: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        span: Any = self._span
        _detach(self._token)
        if typ is None:
            if self._kept[9]:
                span.end()
            return False
        # The SDK's generators, run now around the span already started: its exception handling,
        # stack trace frames, status and end, exactly.
        _, name, context, kind, attributes, links, start_time, record, set_status, end_on_exit = self._kept
        replay: Any = sdk.Tracer.start_as_current_span(
            _Given(span), name, context, kind, attributes, links, start_time,  # type: ignore[arg-type]
            record, set_status, end_on_exit)
        replay.__enter__()
        return bool(replay.__exit__(typ, value, traceback))


class FastTracerProvider(sdk.TracerProvider):
    """The SDK's tracer provider whose tracers are `FastTracer`s."""

    def get_tracer(self, instrumenting_module_name: str, instrumenting_library_version: str | None = None,
                   schema_url: str | None = None, attributes: types.Attributes = None) -> trace_api.Tracer:
        tracer = super().get_tracer(instrumenting_module_name, instrumenting_library_version, schema_url,
                                    attributes)
        if type(tracer) is sdk.Tracer:  # (a disabled SDK returns its NoOpTracer)
            tracer.__class__ = FastTracer
        return tracer


# --- the probe --------------------------------------------------------------------------------------

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
    if isinstance(value, BoundedAttributes):
        return "attributes", dict(value), value.maxlen, value.max_value_len, value.dropped, fields._immutable
    if isinstance(value, BoundedList):
        return ("list", [_fields(item) if hasattr(item, "__dict__") else item for item in value],
                fields._dq.maxlen, value.dropped)
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
    child = tracer.start_span("child", trace_api.set_span_in_context(root), start_time=6)
    dropped = tracer.start_span("dropped", trace_api.set_span_in_context(trace_api.NonRecordingSpan(remote)))
    root.set_attribute("c", 4)  # an existing key (moves last), then a new one beyond the limit
    root.set_attribute("d", "ok")
    made: list[Any] = [_fields(root), _fields(child), dropped.get_span_context(), type(dropped).__name__]
    child.add_event("e", {"x": 1}, timestamp=7)
    child.set_status(StatusCode.ERROR, "bad")
    child.end(8)
    with contextlib.suppress(ValueError), tracer.start_as_current_span("raises", start_time=8, record_exception=False):
        raise ValueError("probe")  # the exception path: the SDK's generators replayed
    root.end(9)
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
                   id_generator=_Ids(), span_limits=sdk.SpanLimits(max_span_attributes=2, max_attribute_length=4))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _same_spans() -> bool:
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


_checked: list[bool] = []


def tracer_provider_class(enabled: bool = True) -> Callable[..., sdk.TracerProvider]:
    """`FastTracerProvider` if enabled and this SDK passes the probe (run once), else the SDK's."""
    if not enabled:
        return sdk.TracerProvider
    if not _checked:
        _checked.append(check_feature("the span path (start_span, end, start_as_current_span)",
                                      "spans are made by the SDK's own (slower) tracer", _same_spans))
    return FastTracerProvider if _checked[0] else sdk.TracerProvider
