"""In-process tail sampling: buffer each trace's local part, decide when its last local span ends.

``TailSamplingProcessor`` wraps the export processor (a ``BatchSpanProcessor`` in production): the SDK
calls processors side by side, so the sampler must sit *in front of* the exporter and call its
``on_end`` only for kept spans.

How a trace is followed
    A trace's *local part* starts at a span whose parent is ``None`` or remote; traces continuing a remote
    parent are buffered like locally rooted ones. Every started span of the part is tracked until it ends
    (several local roots of one trace share the set), so a child ending after its root is waited for.
    When the last tracked span ends, the ``SamplingPolicy`` decides on the trace's ``TraceFacts``: errors
    (ERROR status or an ``exception`` event), the longest local root's duration, and — when rules are
    configured — the entry span's route, method, tenant, name and service (the first local root's fields
    at decision time). See ``policy.py`` for the rules.

After the decision
    Decisions are remembered in a bounded ring (trace id -> decision). A span that starts or ends after
    its trace was decided follows the decision, so a dropped trace never leaks late spans. A new *local
    root* of a trace that was dropped opens a new buffer (a later fan-in may still error or be slow); of a
    kept trace it is simply kept. A span ending whose decision was forgotten (ring overwritten) is dropped
    and counted as eviction ``late_unknown``. ``decision_for(trace_id)`` answers kept / dropped / not yet.

Bounds (memory stays bounded whatever the load; every forced decision is counted by reason)
    ``max_traces`` undecided traces (the oldest is decided early), ``max_spans_per_trace`` spans tracked
    per trace (started or ended; the trace is decided early), ``max_spans`` spans tracked overall (oldest
    traces decided early) and ``max_trace_age_s`` (checked at O(1) cost on span end and when a
    trace starts, and at flush). A forced decision uses the policy with what the trace has so far.

Long traces (partial keeps)
    A trace dropped early by ``max_spans_per_trace`` or ``max_trace_age_s`` while some of its spans still
    run is watched on: what ends after the early decision is buffered again (same bounds), and if an error
    or a slow root shows up (as the matching rule allows) that remainder is kept, marked
    ``crm.sampling.partial=true`` and counted in ``crm.sampler.partial_traces``; otherwise it is dropped.
    Traces forced out by ``max_traces`` / ``max_spans`` (memory pressure) are not watched.

Kept spans reach the downstream processor as a copy carrying ``crm.sampling.reason``,
``crm.sampling.weight`` and, when a rule matched, ``crm.sampling.rule`` (the copy is made only for kept
spans; dropped spans are never copied).

``force_flush``/``shutdown`` decide every buffered trace by the policy (spans still open then follow
that decision). Spans end on any thread: state changes under one lock, held briefly; kept spans are
passed on outside it. After ``fork`` the child starts with an empty buffer and decision ring.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from opentelemetry.context import Context
from opentelemetry.metrics import Meter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from otel_crm._internal import forks, safety
from otel_crm._internal.fast_span import does_nothing
from otel_crm._internal.sampling.policy import Decision, SamplingPolicy, TraceFacts
from otel_crm._internal.sampling.selfmetrics import create_instruments
from otel_crm._internal.sampling.spans import FAST, annotate, entry_facts

__all__ = ["Eviction", "TailSamplingProcessor"]

_COMPONENT = "sampler"
_SAMPLED = 0x01  # TraceFlags.SAMPLED
_ERROR_CODE = StatusCode.ERROR
_FAST = FAST  # see spans._fast_path_works; a module global so a test can take the portable path
Eviction = Literal["max_traces", "max_spans", "max_spans_per_trace", "max_age", "late_unknown"]


class _Trace:
    __slots__ = ("born", "entry", "error", "open", "partial", "root_s", "spans", "tracked")

    def __init__(self, born: float) -> None:
        self.born = born
        self.open: set[int] = set()  # span ids started and not yet ended
        self.spans: list[ReadableSpan] = []  # ended, buffered
        self.error = False
        self.root_s: float | None = None  # longest local root seen
        self.entry: ReadableSpan | None = None  # the first local root (read when rules need it)
        self.partial = False  # the rest of a trace dropped early (see "Long traces")
        self.tracked = 0  # len(open) + len(spans), kept as a count: read on every span start


_Batch = list[tuple[list[ReadableSpan], Decision]]


class TailSamplingProcessor(SpanProcessor):
    """Buffer each trace's local part and pass the kept ones to ``downstream`` (see the module doc)."""

    def __init__(self, downstream: SpanProcessor, policy: SamplingPolicy, *, max_traces: int,
                 max_spans_per_trace: int, max_spans: int, max_trace_age_s: float,
                 meter: Meter | None = None, clock: Callable[[], float] = time.monotonic,
                 decision_cache_size: int | None = None) -> None:
        if min(max_traces, max_spans_per_trace, max_spans) < 1 or max_trace_age_s <= 0:
            raise ValueError("sampler bounds must be positive")
        self._downstream = downstream
        # An on_start that does nothing (the batch processor's) is not called for every span
        # (the same test as the span path's processor dispatch).
        self._downstream_on_start = None if does_nothing(downstream, "on_start") else downstream.on_start
        self._policy = policy
        self._wants_entry = policy.uses_entry
        self._entry_fields = policy.entry_fields
        self._max_traces = max_traces
        self._max_per_trace = max_spans_per_trace
        self._max_spans = max_spans
        self._max_age = max_trace_age_s
        self._clock = clock
        cache = decision_cache_size if decision_cache_size is not None else max(4 * max_traces, 1024)
        self._cache_size = max(1, cache)
        self._shut = False
        self._reset()
        self._n_traces: dict[str, int] = {}
        self._n_kept = 0  # spans
        self._n_dropped = 0
        self._n_evictions: dict[str, int] = {}
        self._n_partial: dict[str, int] = {}
        if meter is not None:
            create_instruments(meter, weakref.ref(self))
        # The bound method is held weakly: the hook goes away with this processor.
        forks.register(f"sampling: tail sampler {id(self)}", after_in_child=self._reset)

    def _reset(self) -> None:
        """Empty state (also the child's state after fork: the parent's buffered spans are not ours)."""
        self._lock = threading.Lock()
        self._traces: OrderedDict[int, _Trace] = OrderedDict()
        self._held = 0  # spans tracked over all buffered traces (open + ended)
        self._decided: dict[int, Decision] = {}
        self._ring: list[int] = [0] * self._cache_size  # trace ids in decision order; 0 = empty
        self._ring_pos = 0
        self._age_deadline = self._clock() + self._max_age

    # --- span hooks -------------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            if _FAST:  # see sdk_compat.SPAN_FIELDS_DIRECT
                context: Any = span._context
            else:
                context = span.context
            if context is None or not context[3] & _SAMPLED or self._shut:
                return
            trace_id = context[0]
            out: _Batch | None = None
            lock = self._lock
            lock.acquire()  # not ``with``: half the cost, and nothing in between can raise
            try:
                trace = self._traces.get(trace_id)
                # (with rules, only until the trace has its entry span: the local root starts first)
                if (trace is None or trace.tracked >= self._max_per_trace
                        or (self._wants_entry and trace.entry is None)):
                    trace, out = self._open(span, trace_id, trace)
                if trace is not None:
                    trace.open.add(context[1])
                    trace.tracked += 1
                    self._held += 1
                    if self._held > self._max_spans:
                        while self._held > self._max_spans and self._traces:
                            out = self._evict_oldest("max_spans", out)
            finally:
                lock.release()
            if out:
                self._export(out)
            if self._downstream_on_start is not None:
                self._downstream_on_start(span, parent_context=parent_context)
        except Exception as exc:
            self._fail(exc)

    def _open(self, span: Span, trace_id: int, trace: _Trace | None) -> tuple[_Trace | None, _Batch | None]:
        """The rarer cases of a span start (lock held): a new trace, a full one, the entry span."""
        parent: Any = span._parent if _FAST else span.parent
        local_root = parent is None or parent[2]
        out: _Batch | None = None
        if trace is None:
            prior = self._decided.get(trace_id)
            # A span of a decided trace follows the decision, except a new local root of a dropped trace:
            # a later fan-in gets its own chance (error, slow).
            if prior is None or not (prior.keep or not local_root):
                now = self._clock()
                if now >= self._age_deadline:
                    out = self._expire(now, out)
                if len(self._traces) >= self._max_traces:
                    out = self._evict_oldest("max_traces", out)
                trace = self._traces[trace_id] = _Trace(now)
        elif trace.tracked >= self._max_per_trace:
            out = self._force(trace_id, trace, "max_spans_per_trace", out)
            # this span follows the early decision, or joins what is watched after a drop
            trace = self._traces.get(trace_id)
        if trace is not None and self._wants_entry and trace.entry is None and local_root:
            trace.entry = span
        return trace, out

    def on_end(self, span: ReadableSpan) -> None:
        try:
            if _FAST:
                context: Any = span._context
                parent: Any = span._parent
                status: Any = span._status
                events: Any = span._events
            else:
                context, parent, status, events = span.context, span.parent, span.status, span.events
            if context is None or not context[3] & _SAMPLED or self._shut:
                return
            trace_id = context[0]
            # The public forms are Python calls on every span (a property, BoundedList.__len__).
            error = (status._status_code if _FAST else status.status_code) is _ERROR_CODE or (
                bool(getattr(events, "_dq", events) if _FAST else events)
                and any(event.name == "exception" for event in events))
            root_s: float | None = None
            if parent is None or parent[2]:  # a local root: its duration counts
                start, end = (span._start_time, span._end_time) if _FAST else (span.start_time, span.end_time)
                if start is not None and end is not None:
                    root_s = (end - start) / 1e9
            lock = self._lock
            lock.acquire()
            try:
                trace = self._traces.get(trace_id)
                if trace is not None and context[1] in trace.open:
                    trace.open.discard(context[1])
                    trace.spans.append(span)
                    if error:
                        trace.error = True
                    if root_s is not None and (trace.root_s is None or root_s > trace.root_s):
                        trace.root_s = root_s
                    out = None if trace.open else self._force(trace_id, trace, None, None)
                else:
                    out = self._follow(trace_id, span)
                now = self._clock()  # on every span end, so a long trace's own spans enforce its age bound
                if now >= self._age_deadline:
                    out = self._expire(now, out)
            finally:
                lock.release()
            if out:
                self._export(out)
        except Exception as exc:
            self._fail(exc)

    # --- decisions (called with the lock held) --------------------------------------------------

    def _follow(self, trace_id: int, span: ReadableSpan) -> _Batch | None:
        """A span of a trace already decided (or forgotten: dropped, counted as ``late_unknown``)."""
        decision = self._decided.get(trace_id)
        if decision is None:
            self._n_evictions["late_unknown"] = self._n_evictions.get("late_unknown", 0) + 1
        elif decision.keep:
            self._n_kept += 1
            return [([span], decision)]
        self._n_dropped += 1
        return None

    def _facts(self, trace: _Trace) -> TraceFacts:
        if self._wants_entry:
            return entry_facts(trace.entry, trace.error, trace.root_s, self._entry_fields)
        return TraceFacts(trace.error, trace.root_s)

    def _force(self, trace_id: int, trace: _Trace, eviction: Eviction | None,
               out: _Batch | None) -> _Batch | None:
        """Decide one buffered trace by the policy; its kept spans are appended to ``out``."""
        del self._traces[trace_id]
        policy = self._policy
        if trace.partial:
            decision = policy.decide_partial(self._facts(trace))
        elif self._wants_entry:
            decision = policy.decide(trace_id, self._facts(trace))
        else:  # no rules: no facts to build
            decision = policy.decide_plain(trace_id, trace.error, trace.root_s)
        self._held -= trace.tracked
        decided = self._decided
        if trace_id not in decided:  # a re-decided trace keeps its ring slot: one slot per id
            ring = self._ring
            position = self._ring_pos
            forgotten = ring[position]
            if forgotten:
                decided.pop(forgotten, None)
            ring[position] = trace_id
            self._ring_pos = (position + 1) % self._cache_size
        decided[trace_id] = decision
        # A watched remainder's decision is a second one for the trace: counted apart when it keeps.
        counts = self._n_partial if trace.partial else self._n_traces
        if decision.keep or not trace.partial:
            counts[decision.reason] = counts.get(decision.reason, 0) + 1
        if eviction is not None:
            self._n_evictions[eviction] = self._n_evictions.get(eviction, 0) + 1
        # Watch the rest of a trace dropped early while spans still run; not after memory pressure, nor
        # twice for age (a span that never ends would be watched forever).
        if not decision.keep and trace.open and (eviction == "max_spans_per_trace" or (
                eviction == "max_age" and not trace.partial)):
            self._watch(trace_id, trace)
        if decision.keep:
            self._n_kept += len(trace.spans)
            if trace.spans:
                if out is None:
                    out = []
                out.append((trace.spans, decision))
        else:
            self._n_dropped += len(trace.spans)
        return out

    def _watch(self, trace_id: int, trace: _Trace) -> None:
        """Follow what is left of a trace dropped early: its running spans and any new ones."""
        rest = _Trace(self._clock())
        rest.open = trace.open  # still running: they end into the new buffer
        rest.entry, rest.error, rest.root_s, rest.partial = trace.entry, trace.error, trace.root_s, True
        rest.tracked = len(rest.open)
        self._traces[trace_id] = rest
        self._held += rest.tracked

    def _evict_oldest(self, reason: Eviction, out: _Batch | None) -> _Batch | None:
        trace_id = next(iter(self._traces))
        return self._force(trace_id, self._traces[trace_id], reason, out)

    def _expire(self, now: float, out: _Batch | None) -> _Batch | None:
        # Traces are in creation order, so only the oldest needs a look; the next deadline is a lower
        # bound on any buffered trace's, which keeps the common on_end to one clock read and a compare.
        traces = self._traces
        while traces:
            trace_id = next(iter(traces))
            trace = traces[trace_id]
            if now - trace.born <= self._max_age:
                self._age_deadline = trace.born + self._max_age
                return out
            out = self._force(trace_id, trace, "max_age", out)
        self._age_deadline = now + self._max_age
        return out

    def _drain(self) -> _Batch | None:
        out: _Batch | None = None
        with self._lock:
            out = self._expire(self._clock(), out)
            while self._traces:
                trace_id = next(iter(self._traces))
                out = self._force(trace_id, self._traces[trace_id], None, out)
        return out

    def _export(self, out: _Batch) -> None:
        on_end = self._downstream.on_end
        for spans, decision in out:
            for span in spans:
                on_end(annotate(span, decision))

    @staticmethod
    def _fail(exc: Exception) -> None:
        with safety.guard(_COMPONENT):  # records it; re-raises only under pytest
            raise exc

    # --- the final decision of a trace ---------------------------------------------------------------

    def decision_for(self, trace_id: int) -> bool | None:
        """True if the trace was kept, False if dropped, None while undecided or forgotten.

        Lock-free (two dict reads): cheap enough for every request's access line. "Undecided" includes
        the rest of a trace dropped early and still watched (it may yet be kept, as a partial trace).
        """
        if trace_id in self._traces:
            return None
        decision = self._decided.get(trace_id)
        return None if decision is None else decision.keep

    # --- flush / shutdown ---------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Decide every buffered trace (by the policy, not dropped), then flush downstream."""
        deadline = time.monotonic() + timeout_millis / 1000
        try:
            out = self._drain()
            if out:
                self._export(out)
        except Exception as exc:
            self._fail(exc)
        remaining = max(0, int((deadline - time.monotonic()) * 1000))
        return self._downstream.force_flush(remaining)

    def shutdown(self) -> None:
        """Decide every buffered trace, pass the kept ones on, then shut downstream down."""
        if self._shut:
            return
        try:
            out = self._drain()
            self._shut = True
            if out:
                self._export(out)
        except Exception as exc:
            self._fail(exc)
        finally:
            self._shut = True
            self._downstream.shutdown()

    # --- self-metrics -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters and buffer sizes (what the self-metrics report); for tests and debugging."""
        with self._lock:
            return {"traces": dict(self._n_traces), "spans": {"kept": self._n_kept, "dropped": self._n_dropped},
                    "evictions": dict(self._n_evictions), "partial": dict(self._n_partial),
                    "buffer_traces": len(self._traces),
                    "buffer_spans": self._held, "decisions_cached": len(self._decided)}
