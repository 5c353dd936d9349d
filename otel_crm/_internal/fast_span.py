"""The span half of the cheaper span path (fast_tracer.py): part of the SDK-compatibility layer (with
sdk_compat.py, sdk_fast_paths.py, fast_tracer.py and fast_histogram.py, the only modules allowed
private SDK names).

- ``FastSpan``: the SDK's span; ``end`` hands the span itself to the processors, ``set_attribute``
  stores a plain value without the cleaning call, ``set_attributes`` a dict of them under one take of
  the locks; ``_add_event`` / ``_add_link`` give the span its own list the first time.
- ``NONE_YET``: the events (and, without start links, the links) of a span that has none yet: one
  shared, empty, read-only list (nothing takes its lock).
- ``new_attributes`` / ``new_list``: a span's ``BoundedAttributes`` and ``BoundedList``s with the
  fields their ``__init__`` sets, without the call; plain start attributes (the ``set_attribute``
  rule: non-empty str keys, str values within the length limit, int, float, bool; no more of them
  than the limit) are copied as they are, since cleaning returns such values unchanged. Anything
  else goes through the SDK's constructor.
- ``plan``: the processors of the provider's ``SynchronousMultiSpanProcessor`` called directly,
  each hook only on the processors whose hook does something: a hook that is a plain function
  whose whole body is ``return None`` (the ``SpanProcessor`` base's ``_on_ending``, the no-op
  ``on_end``/``on_start`` of otel_crm's own processors) and accepts the call is skipped. The plan
  is rebuilt whenever the multi processor's tuple changes (``add_span_processor``).

fast_tracer_probe.py checks all of it against the SDK's classes at start-up.
"""

from __future__ import annotations

import dis
import inspect
import logging
import threading
from collections import deque
from time import time_ns
from types import FunctionType, MappingProxyType
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk
from opentelemetry.sdk.trace import SpanProcessor, SynchronousMultiSpanProcessor
from opentelemetry.sdk.trace._tracer_metrics import noop
from opentelemetry.sdk.util import BoundedList
from opentelemetry.util import types

from otel_crm._internal.memo import Memo

__all__ = ["NONE_YET", "FastSpan", "Plan", "does_nothing", "new_attributes", "new_list", "plan"]

_sdk_log = logging.getLogger(sdk.__name__)  # the SDK's warnings keep their logger
_new, _lock, _MULTI = object.__new__, threading.Lock, SynchronousMultiSpanProcessor
# A processor hook's arguments as the SDK's multi processor passes them (to check a skipped one accepts them).
_CALLS: dict[str, tuple[tuple[object, ...], dict[str, object]]] = {
    "on_start": ((None, None), {"parent_context": None}), "_on_ending": ((None, None), {}),
    "on_end": ((None, None), {})}
_NOTHING = ([("LOAD_CONST", None), ("RETURN_VALUE", None)], [("RETURN_CONST", None)])

# (the multi processor's tuple, then per hook the processors to call); () is every empty tuple.
Plan = tuple[tuple[SpanProcessor, ...], tuple[SpanProcessor, ...], tuple[SpanProcessor, ...],
             tuple[SpanProcessor, ...]]
_last: list[Plan] = [((), (), (), ())]
_KEPT = 64  # bounded caches: start again when full
_plans: Memo[int, Plan] = Memo(_KEPT)
_verdicts: Memo[object, bool] = Memo(_KEPT)  # hook function -> whether a call of it can be skipped


def does_nothing(processor: SpanProcessor, hook: str) -> bool:
    """Whether a call of `processor`'s `hook` can be skipped: a plain function (not set on the
    instance) whose body is `return None` and which accepts the SDK's call."""
    function = inspect.getattr_static(processor, hook, None)
    if type(function) is not FunctionType or hook in getattr(processor, "__dict__", ()):
        return False
    verdict = _verdicts.get(function)
    if verdict is None:
        verdict = _verdicts.put(function, _body_is_return_none(function, hook))
    return verdict


def _body_is_return_none(function: FunctionType, hook: str) -> bool:
    steps = [(step.opname, step.argval) for step in dis.get_instructions(function)
             if step.opname not in ("RESUME", "NOP")]
    if steps not in _NOTHING:
        return False
    args, kwargs = _CALLS[hook]
    try:  # a call the SDK makes that would raise TypeError must still be made
        inspect.signature(function).bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def plan(processors: tuple[SpanProcessor, ...]) -> Plan:
    """The processors to call per hook, for a multi processor's `_span_processors`: the last one
    used, else a small map of plans (by tuple identity: processes with several providers), else built."""
    current = _last[0]
    if current[0] is processors:
        return current
    built = _plans.get(id(processors))
    if built is None or built[0] is not processors:  # (a kept plan holds its tuple: its id stays unique)
        starts, endings, ends = (tuple(processor for processor in processors if not does_nothing(processor, hook))
                                 for hook in ("on_start", "_on_ending", "on_end"))
        built = _plans.put(id(processors), (processors, starts, endings, ends))
    _last[0] = built
    return built


def new_list(maxlen: int | None) -> BoundedList[Any]:
    """`BoundedList(maxlen)`, its fields set directly."""
    made: Any = _new(BoundedList)
    made.dropped = 0
    made._dq = deque((), maxlen)  # noqa: RUF037 - positional: half the cost of maxlen=
    made._lock = _lock()
    result: BoundedList[Any] = made
    return result


class _NoneYet(BoundedList):  # type: ignore[type-arg]
    """The events or links of a FastSpan that has none yet: one shared empty list, read-only. Three
    objects (a list, its deque, its lock) per list per span are not made for the many spans that never
    get an event or a link; FastSpan's ``_add_event`` / ``_add_link`` give the span its own list
    first. Appending here would share an item between spans: it raises instead. Reading it takes no
    lock (the one lock would be shared by every thread, and held across a fork it would stay held in
    the child): it is always empty."""

    def __iter__(self) -> Any:
        return iter(())

    def __deepcopy__(self, memo: Any) -> Any:
        return self  # empty and read-only: a copy is itself

    def append(self, item: Any) -> None:
        raise TypeError("otel_crm: a span's shared empty events/links list is read-only")

    def extend(self, seq: Any) -> None:
        raise TypeError("otel_crm: a span's shared empty events/links list is read-only")


NONE_YET: BoundedList[Any] = _NoneYet(0)


def new_attributes(maxlen: int | None, attributes: types.Attributes, limit: int | None) -> BoundedAttributes:
    """`BoundedAttributes(maxlen, attributes, immutable=False, max_value_len=limit)`."""
    if attributes:
        if ((type(attributes) is not dict and type(attributes) is not MappingProxyType)
                or (maxlen is not None and len(attributes) > maxlen)):
            return BoundedAttributes(maxlen, attributes, immutable=False, max_value_len=limit)
        for key, value in attributes.items():
            kind = type(value)
            if (type(key) is not str or not key
                    or not (kind is int or kind is float or kind is bool
                            or (kind is str and (limit is None or len(value) <= limit)))):
                return BoundedAttributes(maxlen, attributes, immutable=False, max_value_len=limit)
        items = dict(attributes)
    else:
        items = {}
    made: Any = _new(BoundedAttributes)
    made._dict = items
    made.maxlen = maxlen
    made.dropped = 0
    made.max_value_len = limit
    made._lock = _lock()
    made._immutable = False
    result: BoundedAttributes = made
    return result


class FastSpan(sdk._Span):
    """The SDK's span; `end` hands the span itself to the processors (see fast_tracer.py), and
    `set_attribute` stores a plain value (str within the limit, int, float, bool) without cleaning it:
    cleaning returns such a value as is."""

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        attributes: Any = self._attributes
        kind = type(value)
        if (type(attributes) is not BoundedAttributes or type(key) is not str or not key or attributes.maxlen == 0
                or not (kind is int or kind is float or kind is bool or (kind is str and (
                    attributes.max_value_len is None or len(value) <= attributes.max_value_len)))):  # type: ignore[arg-type]
            return super().set_attribute(key, value)
        with self._lock:
            if self._end_time is not None:
                _sdk_log.warning("Setting attribute on ended span.")
                return
            with attributes._lock:
                # The SDK's `_setitem_locked` inline for the common cases: a key set again moves
                # last; a new key while the attributes are full takes the SDK's own (drop, warn).
                items = attributes._dict
                if key in items:
                    del items[key]
                elif attributes.maxlen is not None and len(items) >= attributes.maxlen:
                    attributes._setitem_locked(key, value)
                    return
                items[key] = value
        return None

    def set_attributes(self, attributes: Any) -> None:
        """`set_attribute` of each item, under one lock, when every item is plain (the same rule);
        anything else takes the SDK's own (cleaning) path."""
        items: Any = self._attributes
        if type(items) is not BoundedAttributes or items.maxlen == 0 or type(attributes) is not dict:
            return super().set_attributes(attributes)
        limit = items.max_value_len
        pairs = tuple(attributes.items())  # checked and stored from one snapshot, as the SDK cleans a copy
        if not all(type(key) is str and key and (type(value) is int or type(value) is float or type(value) is bool
                                                 or (type(value) is str and (limit is None or len(value) <= limit)))
                   for key, value in pairs):
            return super().set_attributes(attributes)
        with self._lock:
            if self._end_time is not None:
                _sdk_log.warning("Setting attribute on ended span.")
                return
            with items._lock:
                stored, maxlen = items._dict, items.maxlen
                for key, value in pairs:
                    if key in stored:
                        del stored[key]
                    elif maxlen is not None and len(stored) >= maxlen:
                        items._setitem_locked(key, value)
                        continue
                    stored[key] = value
        return None

    def _add_event(self, event: Any) -> None:
        if self._events is NONE_YET:  # its own list first (the SDK's method then appends, or warns if ended)
            with self._lock:
                if self._events is NONE_YET and self._end_time is None:  # an ended span stays as it is
                    self._events = new_list(self._limits.max_events)
        super()._add_event(event)

    def _add_link(self, link: Any) -> None:
        if self._links is NONE_YET:
            with self._lock:
                if self._links is NONE_YET and self._end_time is None:  # an ended span stays as it is
                    self._links = new_list(self._limits.max_links)
        super()._add_link(link)

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
        processor: Any = self._span_processor
        if type(processor) is _MULTI:
            processors = processor._span_processors
            hooks = _last[0]
            if hooks[0] is not processors:
                hooks = plan(processors)
            for each in hooks[2]:
                each._on_ending(self)
            for each in hooks[3]:
                each.on_end(self)
            return
        processor._on_ending(self)
        processor.on_end(self)


FastSpan.__name__ = FastSpan.__qualname__ = "_Span"  # repr() as the SDK's span (`_Span(name=...)`)
