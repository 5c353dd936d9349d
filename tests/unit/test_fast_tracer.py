"""fast_tracer: the same operations through the SDK's tracer provider and through otel_crm's give the
same spans, field by field (a differential test), and any mismatch found by the probe falls back to
the SDK's classes with one warning."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from otel_crm._internal import fast_span, fast_tracer, sdk_compat, traces
from otel_crm._internal.fast_tracer import FastTracer, FastTracerProvider
from otel_crm._internal.sampling import EntryRecordingHeadSampler
from otel_crm._internal.settings import resolve_settings
from otel_crm.testing import capture_telemetry


class _Ids(IdGenerator):
    def __init__(self) -> None:
        self.count = 0

    def generate_span_id(self) -> int:
        self.count += 1
        return self.count * 0x1111

    def generate_trace_id(self) -> int:
        self.count += 1
        return (self.count * 0x9E3779B97F4A7C15) << 60  # varied high bits: ratio samplers decide both ways

    def is_trace_id_random(self) -> bool:
        return True


class _Ends(SpanProcessor):
    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


_REMOTE_SAMPLED = SpanContext(0xABC << 64, 0xDEF, True, TraceFlags(1), TraceState([("vendor", "v1")]))
_REMOTE_UNSAMPLED = SpanContext(0xABD << 64, 0xDF0, True, TraceFlags(0), TraceState([("vendor", "v2")]))


class Boom(Exception):
    pass


class Stop(BaseException):  # not an Exception: the SDK neither records nor sets status for it
    pass


def _script(tracer: trace.Tracer) -> list[Any]:
    """Every operation once; returns what the caller sees (non-exported facts) for comparison."""
    seen: list[Any] = []
    root = tracer.start_span("root", kind=SpanKind.SERVER, start_time=1_000,
                             attributes={"a": 1, "long": "x" * 40, "list": ["abcdefghijkl", "b"], "b": True,
                                         "c": 2.5, "d": "kept"},
                             links=[Link(_REMOTE_SAMPLED, {"l": "y" * 30}), Link(trace.INVALID_SPAN_CONTEXT)])
    for index in range(6):
        root.add_event(f"e{index}", {"i": index, "text": "z" * 20}, timestamp=2_000 + index)
    root.set_attribute("late", "value-longer-than-limit")
    root.set_attribute("a", 2)  # an existing key: moves last
    root.set_attribute("n", 7)  # a new one, the attributes full: the oldest dropped (and counted)
    for key, value in (("s", "short"), ("f", 1.5), ("t", False), ("none", None), ("", 1), ("seq", [1, 2])):
        root.set_attribute(key, value)
    root.update_name("root renamed")
    root.add_link(_REMOTE_UNSAMPLED, {"k": 1})
    root.set_status(Status(StatusCode.OK))
    root.set_status(StatusCode.ERROR, "ignored after OK")
    with trace.use_span(root):
        with tracer.start_as_current_span("child", attributes={"q": "r"}) as child:
            child.set_attribute("inner", 1)
            child.set_attributes({"m1": "x", "q": "moved", "m2": 2, "m3": 1.5, "m4": True})  # plain: one lock; full
            child.set_attributes({"m5": ["a", "b"], "m6": "value-longer-than-limit", "m7": None})  # the SDK's path
            child.set_attributes(MappingProxyType({"m8": "p"}))  # not a dict: the SDK's path
            child.set_attributes({"": 1, 3: "int key"})  # invalid keys: the SDK's (dropped, warned)
            with tracer.start_as_current_span("grandchild", kind=SpanKind.CLIENT) as grandchild:
                seen.append(trace.get_current_span() is grandchild)
        seen.append(trace.get_current_span() is root)
        try:
            with tracer.start_as_current_span("raises"):
                raise Boom("bad thing")
        except Boom:
            pass
        try:
            with tracer.start_as_current_span("raises quietly", record_exception=False, set_status_on_exception=False):
                raise Boom("not recorded here")
        except Boom:
            pass
        try:
            with tracer.start_as_current_span("base exception"):
                raise Stop
        except Stop:
            pass
        with tracer.start_as_current_span("kept open", end_on_exit=False) as kept_open:
            pass
        seen.append(kept_open.is_recording())
        kept_open.end(50_000)
        try:
            with tracer.start_as_current_span("kept open, raises", end_on_exit=False) as open_raises:
                raise Boom("open")
        except Boom:
            pass
        seen.append(open_raises.is_recording())
        open_raises.end()
        tracer.start_span("mapping attributes", attributes=MappingProxyType({"m": "n", "": "empty key"})).end(4_000)
        # Plain start attributes (copied as they are): a mapping, and exactly at both limits.
        tracer.start_span("plain mapping", attributes=MappingProxyType({"m": "n", "k": 1})).end(4_100)
        tracer.start_span("at the limits", attributes={"a": "12345678", "b": 1, "c": 2.5, "d": False, "e": ""}).end()
        tracer.start_span("one over", attributes={"a": "123456789", "b": 1}).end()
        tracer.start_span("too many", attributes={key: 1 for key in "abcdef"}).end()
        tracer.start_span("none value", attributes={"n": None, "t": (1, 2)}).end()
        with tracer.start_as_current_span("caught inside") as caught:
            try:
                raise ValueError("handled")
            except ValueError as exc:
                caught.record_exception(exc, {"extra": "yes"}, timestamp=3_000)
    root.end(end_time=60_000)
    root.end()  # twice: a warning, nothing changes
    root.set_attribute("after", "end")
    root.set_attributes({"after": "end"})
    root.add_link(_REMOTE_SAMPLED)
    root.add_event("after end")
    root.set_status(StatusCode.ERROR)
    root.update_name("after end")
    seen.append(root.is_recording())

    for parent in (_REMOTE_SAMPLED, _REMOTE_UNSAMPLED):
        remote = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        with tracer.start_as_current_span("from remote", context=remote, kind=SpanKind.SERVER) as entry:
            with tracer.start_as_current_span("under remote") as under:
                seen.append((type(under).__name__, under.get_span_context()))
        seen.append((type(entry).__name__, entry.get_span_context()))

    @tracer.start_as_current_span("decorated", attributes={"sync": True})
    def decorated(value: int) -> int:
        if value < 0:
            raise Boom("negative")
        return value * 2

    seen.append((decorated(2), decorated.__name__, inspect.iscoroutinefunction(decorated)))
    with pytest.raises(Boom):
        decorated(-1)

    @tracer.start_as_current_span("decorated async")
    async def decorated_async(value: int) -> int:
        await asyncio.sleep(0)
        if value < 0:
            raise Boom("negative async")
        return value + 1

    seen.append((asyncio.run(decorated_async(1)), inspect.iscoroutinefunction(decorated_async)))
    with pytest.raises(Boom):
        asyncio.run(decorated_async(-1))
    token = context_api.attach(trace.set_span_in_context(trace.NonRecordingSpan(_REMOTE_UNSAMPLED)))
    try:
        dropped = tracer.start_span("maybe dropped")
        seen.append((type(dropped).__name__, dropped.get_span_context(), dropped.is_recording()))
        dropped.end()
    finally:
        context_api.detach(token)
    return seen


def _exported(span: ReadableSpan) -> dict[str, Any]:
    fields: Any = span
    return {"json": json.loads(span.to_json()), "context": tuple(span.context or ())[:5],
            "containers": [sorted((key, type(value).__name__) for key, value in vars(container).items())
                           if hasattr(container, "__dict__") else type(container).__name__
                           for container in (fields._attributes, fields._events, fields._links)],
            "attribute_keys": list(fields._attributes or ()),
            "immutable": getattr(fields._attributes, "_immutable", None),
            "parent": tuple(span.parent)[:5] if span.parent else None,
            "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
            "event_dropped": [event.dropped_attributes for event in span.events],
            "link_dropped": [getattr(link, "dropped_attributes", 0) for link in span.links],
            "scope": span.instrumentation_scope, "resource": dict(span.resource.attributes),
            "status": (span.status.status_code, span.status.description)}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    ticks = [10_000]

    def time_ns() -> int:
        ticks[0] += 7
        return ticks[0]

    def reset() -> None:
        ticks[0] = 10_000

    monkeypatch.setattr(sdk, "time_ns", time_ns)
    monkeypatch.setattr(fast_tracer, "time_ns", time_ns)
    monkeypatch.setattr(fast_span, "time_ns", time_ns)
    yield reset


def _run(cls: type[sdk.TracerProvider], sampler: sampling.Sampler, caplog: pytest.LogCaptureFixture,
         reset: Callable[[], None]) -> tuple[list[dict[str, Any]], list[Any], list[str], list[ReadableSpan]]:
    reset()
    limits = SpanLimits(max_span_attributes=5, max_attribute_length=8, max_events=4, max_links=2,
                        max_event_attributes=1, max_link_attributes=1)
    provider = cls(sampler=sampler, resource=Resource({"service.name": "diff"}), shutdown_on_exit=False,
                   id_generator=_Ids(), span_limits=limits)
    exporter, ends = InMemorySpanExporter(), _Ends()
    provider.add_span_processor(ends)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caplog.clear()
    seen = _script(provider.get_tracer("diff.scope", "1.2", "https://schema", {"scope.attr": "s"}))
    logs = [f"{r.name}:{r.levelname}:{r.getMessage()}" for r in caplog.records]
    return [_exported(span) for span in exporter.get_finished_spans()], seen, logs, ends.ended


_SAMPLERS = {"always_on": sampling.ALWAYS_ON, "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
             "ratio": sampling.TraceIdRatioBased(0.5),
             "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
             "otel_crm_head": EntryRecordingHeadSampler(0.5)}


@pytest.mark.parametrize("name", list(_SAMPLERS))
def test_the_same_operations_give_the_same_spans(name: str, caplog: pytest.LogCaptureFixture,
                                                  clock: Callable[[], None]) -> None:
    caplog.set_level(logging.DEBUG)
    expected, expected_seen, expected_logs, _ = _run(sdk.TracerProvider, _SAMPLERS[name], caplog, clock)
    got, seen, logs, ended = _run(FastTracerProvider, _SAMPLERS[name], caplog, clock)
    assert len(got) == len(expected)
    for ours, sdks in zip(got, expected, strict=True):
        assert ours == sdks
    assert seen == expected_seen
    assert logs == expected_logs  # the same warnings (limits, end twice, set after end), same loggers
    if name != "parentbased_always_off":
        assert len(expected) > 10
        # processors get the span itself, not a copy; it stays what they saw
        assert ended and all(type(span).__name__ == "_Span" and isinstance(span, sdk.Span) for span in ended)
        assert any(event["name"] == "exception" for span in got for event in span["json"]["events"])


def test_exceptions_keep_the_sdks_stack_trace(clock: Callable[[], None]) -> None:
    def run(cls: type[sdk.TracerProvider]) -> str:
        clock()
        exporter = InMemorySpanExporter()
        provider = cls(sampler=sampling.ALWAYS_ON, shutdown_on_exit=False, id_generator=_Ids())
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("t")

        @tracer.start_as_current_span("decorated")
        def fails() -> None:
            raise Boom("x")

        with pytest.raises(Boom) as raised:
            fails()
        frames = [frame.name for frame in raised.traceback]
        (span,) = exporter.get_finished_spans()
        return str(span.events[0].attributes["exception.stacktrace"]) + repr(frames[-2:])

    ours = run(FastTracerProvider)
    assert ours == run(sdk.TracerProvider)
    assert "in use_span" in ours and "in start_as_current_span" in ours and "contextlib.py" in ours


def test_the_tracers_are_the_sdks_with_the_fast_methods() -> None:
    provider = FastTracerProvider(shutdown_on_exit=False)
    tracer = provider.get_tracer("x")
    assert type(tracer) is FastTracer and isinstance(tracer, sdk.Tracer)
    assert provider.get_tracer("x") is tracer  # the SDK's cache
    manager = tracer.start_as_current_span("s")
    assert not inspect.isgenerator(getattr(manager, "gen", None))  # a class, not a generator
    with manager as span:
        assert trace.get_current_span() is span
    with pytest.raises(AttributeError):  # as the SDK's: not reusable once entered
        manager.__enter__()


def test_the_sdk_span_path_is_used_when_the_probe_finds_a_difference(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    assert fast_tracer.tracer_provider_class() is FastTracerProvider  # the pinned SDK passes
    monkeypatch.setattr(fast_tracer, "_checked", [])
    monkeypatch.setattr(sdk_compat, "_warned", set())  # (another test may have warned already)
    monkeypatch.setattr(fast_tracer, "_FLAGS", (TraceFlags(0),) * 4)  # a wrong sampled flag
    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        assert fast_tracer.tracer_provider_class() is sdk.TracerProvider
        assert fast_tracer.tracer_provider_class() is sdk.TracerProvider
    lines = [r.getMessage() for r in caplog.records if "span path" in r.getMessage()]
    assert len(lines) == 1 and "SDK's own" in lines[0]


def test_a_changed_sampler_or_internal_metrics_take_the_sdks_way() -> None:
    exporter = InMemorySpanExporter()
    provider = FastTracerProvider(sampler=sampling.ALWAYS_ON, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer: Any = provider.get_tracer("x")
    tracer.start_span("on").end()
    tracer.sampler = sampling.ALWAYS_OFF  # re-read on every start
    assert not tracer.start_span("off").is_recording()
    calls: list[Any] = []

    class Metrics:
        def start_span(self, parent: Any, decision: Any) -> Callable[[], None]:
            calls.append(decision)
            return lambda: calls.append("end")

    tracer.sampler = sampling.ALWAYS_ON
    tracer._tracer_metrics = Metrics()
    tracer.start_span("counted").end()
    assert [span.name for span in exporter.get_finished_spans()] == ["on", "counted"]
    assert calls == [sampling.Decision.RECORD_AND_SAMPLE, "end"]


def test_otel_crm_pipelines_use_it_and_export_the_same_spans(monkeypatch: pytest.MonkeyPatch,
                                                             clock: Callable[[], None]) -> None:
    settings = resolve_settings({}, service_name="svc", sampling_mode="tail", sampling_ratio=0.5,
                                traces_exporter=("none",), metrics_exporter=("none",), logs_exporter=("none",))

    def run(cls: Callable[..., sdk.TracerProvider]) -> list[dict[str, Any]]:
        clock()
        monkeypatch.setattr(traces, "tracer_provider_class", lambda enabled=True: cls)
        exporter = InMemorySpanExporter()
        provider = traces.create_tracer_provider(settings, Resource({"service.name": "svc"}), exporter=exporter)
        assert type(provider) is cls
        provider.id_generator = _Ids()
        _script(provider.get_tracer("pipeline"))  # error traces among them: the tail sampler keeps those
        provider.force_flush()
        return [_exported(span) for span in exporter.get_finished_spans()]

    got = run(FastTracerProvider)
    assert got and got == run(sdk.TracerProvider)


def test_otel_crm_fast_spans_false_gives_the_sdks_own_provider() -> None:
    common = {"OTEL_CRM_SAMPLING_MODE": "tail", "OTEL_TRACES_EXPORTER": "none"}
    resource = Resource({"service.name": "svc"})
    off = resolve_settings({**common, "OTEL_CRM_FAST_SPANS": "false"})
    on = resolve_settings(common)
    assert (off.fast_spans, on.fast_spans) == (False, True)
    assert type(traces.create_tracer_provider(off, resource, exporter=InMemorySpanExporter())) is sdk.TracerProvider
    assert type(traces.create_tracer_provider(on, resource, exporter=InMemorySpanExporter())) is FastTracerProvider


def test_capture_telemetry_runs_the_fast_path() -> None:
    with capture_telemetry() as telemetry:
        with trace.get_tracer("t").start_as_current_span("s"):
            pass
    assert [span.name for span in telemetry.span_exporter.get_finished_spans()] == ["s"]
    assert type(trace.get_tracer_provider()) is FastTracerProvider


def test_a_broken_exception_path_fails_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    def incompatible(self: Any, **_: Any) -> Any:  # as if the SDK's generator changed its call
        raise TypeError("start_span() got an unexpected keyword argument")

    monkeypatch.setattr(fast_tracer._Given, "start_span", incompatible)
    monkeypatch.setattr(fast_tracer, "_checked", [])
    monkeypatch.setattr(sdk_compat, "_warned", set())
    assert fast_tracer.tracer_provider_class() is sdk.TracerProvider


class _Calls(SpanProcessor):
    def __init__(self, calls: list[tuple[str, ...]], tag: str) -> None:
        self.calls, self.tag = calls, tag

    def on_start(self, span: sdk.Span, parent_context: context_api.Context | None = None) -> None:
        self.calls.append((self.tag, "on_start", span.name, str(parent_context is None)))

    def _on_ending(self, span: sdk.Span) -> None:
        self.calls.append((self.tag, "_on_ending", span.name))

    def on_end(self, span: ReadableSpan) -> None:
        self.calls.append((self.tag, "on_end", span.name, str(span.end_time is not None)))


class _Quiet(SpanProcessor):
    """Hooks that do nothing: the fast dispatch skips them."""

    def on_start(self, span: sdk.Span, parent_context: context_api.Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        """A docstring does not make it do something."""


class _QuietPositional(SpanProcessor):
    def on_start(self, span: sdk.Span, context: context_api.Context | None = None) -> None:  # type: ignore[override]
        return None  # does nothing, but the SDK's keyword call raises TypeError: it must still be made


def _dispatch(cls: type[sdk.TracerProvider]) -> list[Any]:
    calls: list[Any] = []
    provider = cls(shutdown_on_exit=False, id_generator=_Ids())
    quiet, patched = _Quiet(), _Quiet()
    for processor in (_Calls(calls, "first"), quiet, patched):
        provider.add_span_processor(processor)
    tracer = provider.get_tracer("dispatch")
    with tracer.start_as_current_span("before"):
        pass
    # Processors added, and a hook patched on an instance, after spans were started: both count.
    provider.add_span_processor(_Calls(calls, "late"))
    patched.on_end = lambda span: calls.append(("patched", "on_end", span.name))  # type: ignore[method-assign]
    patched_later = _Quiet()
    provider.add_span_processor(patched_later)
    with tracer.start_as_current_span("after"):
        tracer.start_span("inner", trace.set_span_in_context(trace.INVALID_SPAN)).end(5)
    provider.add_span_processor(_QuietPositional())
    try:
        tracer.start_span("positional")
    except TypeError as error:
        calls.append(("raised", str(error)))
    calls.append(("shutdown", provider.shutdown()))
    return calls




def test_the_processors_see_the_same_calls() -> None:
    ours = _dispatch(FastTracerProvider)
    assert ours == _dispatch(sdk.TracerProvider)
    assert ("patched", "on_end", "after") in ours and ("late", "_on_ending", "inner") in ours
    assert any(call[0] == "raised" and "parent_context" in call[1] for call in ours)
