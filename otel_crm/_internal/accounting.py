"""Exact accounting of the export pipelines: produced = exported + dropped, per signal.

One process-wide ledger. What it counts, per signal (``traces``, ``logs``, ``metrics``):

- **produced**: items handed to otel_crm's OTLP export pipeline. Spans and log records are
  counted by the batch processors' queue guard (``exporters.QueueGuard``) as they are offered,
  under the lock the guard already takes (no extra lock on the request thread); a log record
  dropped by the scrubber before it reached the queue is counted too. Metric data points are
  counted per export call. Spans the sampler dropped never get here: they are counted apart
  (``crm.sampler.spans{crm.sampling.decision="dropped"}``).
- **exported**: items of export calls that succeeded, counted per batch in the exporter wrapper.
- **dropped**, by reason (:data:`REASONS`), each also added to ``crm.telemetry.dropped``.

At the end (``settle``) whatever is neither exported nor dropped (still queued, or in an export
that did not return before the deadline) is counted as dropped, reason ``shutdown``, and the
signal is frozen: a late answer of an abandoned export changes nothing, and an item offered after
that (its processor is shut down) is counted as a ``shutdown`` drop too. So after ``settle``,
``produced == exported + sum(dropped)`` holds exactly; before it, the difference is ``pending``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from otel_crm._internal import forks, semconv

__all__ = ["REASONS", "SIGNALS", "Produced", "Tally", "drop", "exported", "produce", "produced_cell", "reset",
           "set_counter", "settle", "snapshot"]

SIGNALS = ("traces", "logs", "metrics")
# Every way an item can be lost after it was produced; documented in docs/telemetry.md.
REASONS = ("queue_full", "export_failed", "export_error", "scrub_error", "shutdown")


class Produced:
    """A guard's count of offered items; incremented by its owner under the owner's own lock."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


@dataclass
class Tally:
    """One signal's figures at one moment."""

    produced: int = 0
    exported: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    pending: int = 0  # queued or in an export call; 0 once settled

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        return {"produced": self.produced, "exported": self.exported, "dropped": dict(self.dropped),
                "pending": self.pending}


_lock = threading.Lock()
_cells: dict[str, list[Produced]] = {signal: [] for signal in SIGNALS}
_produced: dict[str, int] = dict.fromkeys(SIGNALS, 0)
_exported: dict[str, int] = dict.fromkeys(SIGNALS, 0)
_dropped: dict[tuple[str, str], int] = {}
_settled: set[str] = set()
_counter: Any = None


def set_counter(counter: Any) -> None:
    """The ``crm.telemetry.dropped`` counter drops are added to (the runtime's; None: tally only)."""
    global _counter
    _counter = counter


def produced_cell(signal: str) -> Produced:
    """A count of produced items owned by one queue guard (kept for the life of the process, so a
    guard that goes away keeps its items in the total)."""
    cell = Produced()
    with _lock:
        _cells[signal].append(cell)
    return cell


def produce(signal: str, items: int) -> None:
    if items > 0:
        with _lock:
            _produced[signal] += items


def exported(signal: str, items: int) -> None:
    if items > 0:
        with _lock:
            if signal not in _settled:
                _exported[signal] += items


def drop(signal: str, reason: str, items: int, *, count: bool = True, entered: bool = False) -> None:
    """`items` of `signal` lost for `reason`. `count=False`: the caller adds them to its own
    ``crm.telemetry.dropped`` instrument. `entered=True`: they were lost before the queue guard
    saw them, so they are produced here too (a log record the scrubber refused)."""
    if items <= 0:
        return
    with _lock:
        if entered:
            _produced[signal] += items
        if signal in _settled and not entered:
            return  # already counted as `shutdown` when the signal was settled
        _dropped[signal, reason] = _dropped.get((signal, reason), 0) + items
    if count:
        _add(signal, reason, items)


def _add(signal: str, reason: str, items: int) -> None:
    counter = _counter
    if counter is not None:
        with contextlib.suppress(Exception):  # counting must never fail the caller
            counter.add(items, {semconv.CRM_SIGNAL: signal, semconv.CRM_DROP_REASON: reason})


def _tally(signal: str) -> Tally:  # under _lock
    produced = _produced[signal] + sum(cell.n for cell in _cells[signal])
    dropped = {reason: n for (sig, reason), n in _dropped.items() if sig == signal and n}
    tally = Tally(produced, _exported[signal], dropped)
    tally.pending = produced - tally.exported - tally.dropped_total
    if signal in _settled and tally.pending:
        tally.dropped["shutdown"] = tally.dropped.get("shutdown", 0) + tally.pending
        tally.pending = 0
    return tally


def settle(signals: Iterable[str] = SIGNALS) -> dict[str, int]:
    """The end of `signals`' pipelines: count what is still pending as dropped (``shutdown``) and
    freeze them. Returns the items counted now, per signal."""
    counted: dict[str, int] = {}
    with _lock:
        for signal in signals:
            if signal in _settled:
                continue
            pending = _tally(signal).pending
            _settled.add(signal)
            if pending > 0:
                _dropped[signal, "shutdown"] = _dropped.get((signal, "shutdown"), 0) + pending
                counted[signal] = pending
    for signal, items in counted.items():
        _add(signal, "shutdown", items)
    return counted


def snapshot() -> dict[str, Tally]:
    """Every signal's figures now."""
    with _lock:
        return {signal: _tally(signal) for signal in SIGNALS}


def reset() -> None:
    """Start from zero (tests; a forked child, whose parent's figures are not its own)."""
    with _lock:
        for cells in _cells.values():
            for cell in cells:
                cell.n = 0
        for signal in SIGNALS:
            _produced[signal] = 0
            _exported[signal] = 0
        _dropped.clear()
        _settled.clear()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a parent thread may have held it at fork time
    reset()


forks.register("accounting: ledger", after_in_child=_after_fork_in_child)
