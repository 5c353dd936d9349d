"""A cheaper span path through the SDK's own classes: part of the SDK-compatibility layer (with
sdk_compat.py, sdk_fast_paths.py, fast_span.py, fast_tracer_probe.py and fast_histogram.py, the only
modules allowed private SDK names).

otel_crm's tracer provider hands out the SDK's tracers and spans with these methods replaced:

- ``start_span``: the SDK's steps without the keyword plumbing: the sampler's answer computed
  directly for the samplers otel_crm's modes install (``ALWAYS_ON``; ``ParentBased(ALWAYS_ON)``
  with its default delegates), any other sampler asked as usual; trace flags precomputed; the
  span's fields set at once, its attributes, events and links containers too (fast_span.py); the
  SDK's self-metrics hook skipped when it is the no-op one; the processors called directly, each
  hook only where it does something (fast_span.plan).
- ``Span.end``: hands the span itself to ``on_end`` instead of the ``ReadableSpan`` copy the SDK
  makes on every end. The copy shares the span's attributes, events and links and snapshots the
  rest; after ``end`` nothing public can change any of them (``_check_span_ended``, immutable
  attributes), so processors and exporters read the same values either way.
- ``Span.set_attribute``: a plain value is inserted as the SDK's own insert does, without the
  cleaning call (``FastSpan``, fast_span.py).
- ``start_as_current_span``: a class instead of a generator. The exception path (rare) replays the
  SDK's own generators, so the recorded exception, its stack trace and the status are the SDK's.

Every assumption is probed once, when the first provider is built (``tracer_provider_class``,
fast_tracer_probe.py): spans made both ways must have the same fields, the processors must see the
same calls, and ended spans must ignore every mutator. On any mismatch the plain SDK classes are
used and one warning says so. The start of the current span's lookup is ``get_current_span``'s own
steps inline (``get_value`` and ``get_current`` without their frames).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from time import time_ns
from types import MappingProxyType, TracebackType
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk import trace as sdk
from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor, sampling
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics, noop
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, TraceFlags, TraceState
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util import types
from opentelemetry.util._decorator import _AgnosticContextManager

from otel_crm._internal.fast_span import NONE_YET, FastSpan, _last, new_attributes, plan
from otel_crm._internal.sdk_compat import check_feature

__all__ = ["FastSpan", "FastTracer", "FastTracerProvider", "tracer_provider_class"]

_FLAGS = tuple(TraceFlags(bits) for bits in range(4))  # [sampled | random-trace-id]
_TRACE_ID_MAX, _SPAN_ID_MAX = 2**128 - 1, 2**64 - 1
_UNSET: Status = inspect.signature(sdk.ReadableSpan.__init__).parameters["status"].default
_GENERIC, _ALWAYS_ON, _PARENT_ON = 0, 1, 2
_SAMPLE, _DROP = sampling.Decision.RECORD_AND_SAMPLE, sampling.Decision.DROP
_new, _new_tuple = object.__new__, tuple.__new__
_attach, _detach, _set_value = context_api.attach, context_api.detach, context_api.set_value
_get_current, _Span, _INVALID_SPAN = context_api.get_current, trace_api.Span, trace_api.INVALID_SPAN
_MULTI = SynchronousMultiSpanProcessor


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


class FastTracer(sdk.Tracer):
    """The SDK's tracer (set as the class of the provider's tracers) with a cheaper span start."""

    _crm_mode: tuple[object, int] = (None, _GENERIC)  # (sampler, its mode): recomputed if it changes

    def start_span(self, name: str, context: Context | None = None,  # noqa: PLR0917 - the SDK signature
                   kind: SpanKind = SpanKind.INTERNAL, attributes: types.Attributes = None,
                   links: Sequence[Link] | None = (), start_time: int | None = None,
                   record_exception: bool = True, set_status_on_exception: bool = True) -> trace_api.Span:
        current = (context if context is not None else _get_current()).get(_SPAN_KEY)  # get_current_span
        if type(current) is not FastSpan and (current is None or not isinstance(current, _Span)):
            current = _INVALID_SPAN
        parent: Any = current.get_span_context()
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
        span._attributes = new_attributes(limits.max_span_attributes, attributes, limits.max_span_attribute_length)
        span._events = NONE_YET  # its own list at its first event (FastSpan._add_event)
        span._links = span._new_links(links) if links else NONE_YET
        span._record_end_metrics = end_metrics
        span._start_time = start_time if start_time is not None else time_ns()
        if type(processor) is _MULTI:  # its loop, on the processors whose on_start does something
            processors: Any = processor._span_processors
            hooks = _last[0]
            if hooks[0] is not processors:
                hooks = plan(processors)
            for each in hooks[1]:
                each.on_start(span, parent_context=context)
        else:
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


_checked: list[bool] = []


def tracer_provider_class(enabled: bool = True) -> Callable[..., sdk.TracerProvider]:
    """`FastTracerProvider` if enabled and this SDK passes the probe (run once), else the SDK's."""
    if not enabled:
        return sdk.TracerProvider
    if not _checked:
        _checked.append(check_feature("the span path (start_span, end, start_as_current_span)",
                                      "spans are made by the SDK's own (slower) tracer", _same_spans))
    return FastTracerProvider if _checked[0] else sdk.TracerProvider


def _same_spans() -> bool:
    from otel_crm._internal.fast_tracer_probe import same_spans  # (here: it imports this module)

    return same_spans()
