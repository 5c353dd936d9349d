"""fast_span: the containers built without their `__init__` equal the SDK's constructors' (fields and
all), and the dispatch plan skips exactly the hooks that do nothing. The span path end to end, against
the SDK's, is tests/unit/test_fast_tracer.py's differential test."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.util import BoundedList

from otel_crm._internal import fast_span


def _state(value: Any) -> list[tuple[str, Any]]:
    fields = vars(value)
    return sorted((key, type(item).__name__ if key == "_lock" else
                   (list(item), item.maxlen) if key == "_dq" else item) for key, item in fields.items())


@pytest.mark.parametrize("attributes", [
    None, {}, {"a": "x", "b": 1, "c": 2.5, "d": True}, MappingProxyType({"m": "n"}),
    {"s": "12345678"}, {"s": "123456789"}, {"": 1}, {"n": None}, {"t": [1, 2]}, {k: 1 for k in "abcdef"},
    {1: "int key"},
])
@pytest.mark.parametrize(("maxlen", "limit"), [(5, 8), (None, None), (0, None)])
def test_new_attributes_equals_the_sdks_constructor(attributes: Any, maxlen: int | None, limit: int | None) -> None:
    ours = fast_span.new_attributes(maxlen, attributes, limit)
    sdks = BoundedAttributes(maxlen, attributes, immutable=False, max_value_len=limit)
    assert type(ours) is BoundedAttributes
    assert _state(ours) == _state(sdks) and list(ours.items()) == list(sdks.items())


@pytest.mark.parametrize("maxlen", [None, 0, 3, 128])
def test_new_list_equals_the_sdks_constructor(maxlen: int | None) -> None:
    ours, sdks = fast_span.new_list(maxlen), BoundedList(maxlen)
    assert type(ours) is BoundedList and _state(ours) == _state(sdks)
    for item in range(5):
        ours.append(item)
        sdks.append(item)
    assert _state(ours) == _state(sdks)


class _Does(SpanProcessor):
    def __init__(self) -> None:
        self.seen = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.seen += 1

    def _on_ending(self, span: Span) -> None:
        self.seen += 1

    def on_end(self, span: ReadableSpan) -> None:
        self.seen += 1


class _Quiet(SpanProcessor):
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        """A docstring does not make it do something."""


class _QuietPositional(SpanProcessor):
    def on_start(self, span: Span, context: Context | None = None) -> None:  # type: ignore[override]
        return None  # does nothing, but the SDK's keyword call raises TypeError: it must still be made


def test_the_dispatch_skips_only_hooks_that_do_nothing() -> None:
    processors = (_Does(), _Quiet(), _QuietPositional(), SpanProcessor())
    hooks = fast_span.plan(processors)
    assert hooks[0] is processors
    assert [type(processor).__name__ for processor in hooks[1]] == ["_Does", "_QuietPositional"]
    assert [type(processor).__name__ for processor in hooks[2]] == ["_Does"]
    assert [type(processor).__name__ for processor in hooks[3]] == ["_Does"]
    assert fast_span.plan(processors) is hooks  # cached while the tuple is the same
    other = (_Does(),)
    assert fast_span.plan(other)[0] is other
    assert fast_span.plan(processors) is hooks  # several providers in turn: each plan kept, not rebuilt


def test_a_hook_set_on_the_instance_is_always_called() -> None:
    quiet = _Quiet()
    quiet.on_end = lambda span: None  # type: ignore[method-assign]
    assert fast_span.plan((quiet,))[3] == (quiet,)


def test_spans_share_one_read_only_empty_list_until_their_first_event_or_link() -> None:
    from opentelemetry.sdk.trace import SpanLimits
    from opentelemetry.trace import SpanContext, TraceFlags

    from otel_crm._internal.fast_tracer import FastTracerProvider

    provider = FastTracerProvider(span_limits=SpanLimits(max_events=3, max_links=2), shutdown_on_exit=False)
    tracer = provider.get_tracer("t")
    first, second = tracer.start_span("a"), tracer.start_span("b")
    fields: Any = first
    assert fields._events is fast_span.NONE_YET and fields._links is fast_span.NONE_YET
    assert first.events == () and first.links == () and first.dropped_events == 0 and first.dropped_links == 0
    for index in range(5):
        first.add_event(f"e{index}")
    first.add_link(SpanContext(1, 2, True, TraceFlags(1)))
    assert [event.name for event in first.events] == ["e2", "e3", "e4"] and first.dropped_events == 2
    assert len(first.links) == 1 and fields._events._dq.maxlen == 3 and fields._links._dq.maxlen == 2
    assert len(fast_span.NONE_YET) == 0 and fast_span.NONE_YET.dropped == 0  # untouched
    second.end()
    second.add_event("after end")  # the SDK's warning; the ended span keeps the shared empty list
    assert vars(second)["_events"] is fast_span.NONE_YET and second.events == ()
    with pytest.raises(TypeError):
        fast_span.NONE_YET.append("x")
    with pytest.raises(TypeError):
        fast_span.NONE_YET.extend(["x"])
