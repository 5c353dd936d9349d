"""Up-down counters summed in process, reported to the SDK when a reader collects.

The instrumentations record two up-down counters on every request: Flask's (and Django's)
`http.server.active_requests` (+1, then -1) and SQLAlchemy's connection pool count (idle -1 /
used +1 at checkout, back at checkin). Each SDK recording copies, cleans and hashes its attributes
and takes a lock: ~15 µs apiece, six or more per request. :class:`LocalUpDownCounter` stands in for
the instrument the instrumentation asked for: one dict lookup and an integer addition under a lock
per recording, and an *observable* up-down counter of the same name, unit and description whose
callback reports every attribute set's sum — the same data points a synchronous up-down counter
gives (a non-monotonic sum, zeros included), without the per-recording work.

A forked child starts from zero, as the SDK's fresh stores do after fork (`forks.py`).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.util.types import Attributes, AttributeValue

from otel_crm._internal import forks
from otel_crm._internal.safety import guard

__all__ = ["LocalUpDownCounter", "Transfer", "local_up_down_counter"]

Rename = Callable[[Attributes], dict[str, AttributeValue]]


_NONE: frozenset[tuple[str, Any]] = frozenset()


def _text_key(attributes: Attributes) -> frozenset[tuple[str, Any]]:
    """The key of an attribute set with an unhashable value (a list): its values' text."""
    return frozenset((k, repr(v)) for k, v in (attributes or {}).items())


def _copy(attributes: Attributes) -> dict[str, AttributeValue]:
    return dict(attributes or {})


class LocalUpDownCounter:
    """An `UpDownCounter` look-alike (`add(amount, attributes, context)`); `rename` maps the
    attributes the instrumentation passes to the ones recorded (once per distinct set)."""

    __slots__ = ("__weakref__", "_lock", "_name", "_rename", "_rows")

    def __init__(self, meter: Meter, name: str, unit: str = "", description: str = "",
                 rename: Rename | None = None) -> None:
        self._name = name
        self._rename = rename or _copy
        self._reset()
        meter.create_observable_up_down_counter(name, callbacks=[self._observe], unit=unit,
                                                description=description)
        # The bound method is held weakly: the hook goes away with this counter.
        forks.register(f"metrics: local sums of {name} {id(self)}", after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        # the attributes as passed (items) -> [the attributes recorded, their sum]
        self._rows: dict[frozenset[tuple[str, Any]], list[Any]] = {}

    def add(self, amount: float, attributes: Attributes = None, context: Any = None) -> None:
        if type(amount) is not int and not math.isfinite(amount):  # the SDK ignores these too
            return
        # Runs several times per request: `guard` only sees the (never expected) exception.
        try:
            try:
                key = frozenset(attributes.items()) if attributes else _NONE
            except TypeError:  # an unhashable value (a list): keyed by its text, recorded as given
                key = _text_key(attributes)
            row = self._rows.get(key)
            if row is None:
                row = self._row(key, attributes)
            with self._lock:
                row[1] += amount
        except Exception:
            with guard("metrics"):
                raise

    def transfer(self, source: Attributes, target: Attributes) -> Transfer:
        """`add(-amount, source)` then `add(amount, target)` as one step (a pooled connection moving
        between states): the same sums, one lock, no per-call key. Rows are made in that order."""
        return Transfer(self, source, target)

    def _key(self, attributes: Attributes) -> frozenset[tuple[str, Any]]:
        try:
            return frozenset(attributes.items()) if attributes else _NONE
        except TypeError:
            return _text_key(attributes)

    def _row(self, key: frozenset[tuple[str, Any]], attributes: Attributes) -> list[Any]:
        recorded = self._rename(attributes)
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = [recorded, 0]
        return row

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            rows = [(recorded, total) for recorded, total in self._rows.values()]
        return [Observation(total, recorded) for recorded, total in rows]

    def sums(self) -> dict[tuple[tuple[str, Any], ...], float]:
        """{sorted recorded attributes: sum} (for tests)."""
        with self._lock:
            return {tuple(sorted(recorded.items())): total for recorded, total in self._rows.values()}


class Transfer:
    """A bound :meth:`LocalUpDownCounter.transfer`: call it with the amount. Its two rows are looked
    up again after a fork reset (the counter's rows are then new)."""

    __slots__ = ("_counter", "_from", "_rows", "_source", "_target", "_to")

    def __init__(self, counter: LocalUpDownCounter, source: Attributes, target: Attributes) -> None:
        self._counter, self._source, self._target = counter, source, target
        self._rows: Any = None
        self._from: list[Any] = []
        self._to: list[Any] = []

    def __call__(self, amount: int) -> None:
        counter = self._counter
        try:
            if counter._rows is not self._rows:
                rows = counter._rows
                self._from = counter._row(counter._key(self._source), self._source)
                self._to = counter._row(counter._key(self._target), self._target)
                self._rows = rows
            with counter._lock:
                self._from[1] -= amount
                self._to[1] += amount
        except Exception:
            with guard("metrics"):
                raise


# One counter per meter and name: the SDK registers an instrument name once per meter and returns
# the first instrument (and only its callbacks) to later calls, so a second LocalUpDownCounter of the
# same name would sum what nobody reports. The SDK's own up-down counters are shared the same way.
_shared: weakref.WeakKeyDictionary[Any, dict[str, LocalUpDownCounter]] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def local_up_down_counter(meter: Meter, name: str, unit: str = "", description: str = "",
                          rename: Rename | None = None) -> LocalUpDownCounter:
    """The meter's :class:`LocalUpDownCounter` called `name` (created on first use)."""
    with _shared_lock:
        by_name = _shared.setdefault(meter, {})
        counter = by_name.get(name)
        if counter is None:
            counter = by_name[name] = LocalUpDownCounter(meter, name, unit, description, rename)
        return counter
