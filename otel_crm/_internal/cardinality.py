"""The cardinality guard: no caller can grow otel_crm's metrics without bound.

Every metric attribute that can carry a request-derived value (operation, connector, workflow,
model, index, tenant) passes :meth:`CardinalityGuard.bound` before it is recorded. Per metric and
attribute, the first `budget` distinct values keep their (outgoing) form; the rest are recorded as
``__other__`` and each overflow is counted (``crm.metric.overflow{crm.metric.name,
crm.metric.attribute}``). Allow-listed values always keep their form.

The outgoing form of an admitted value is computed once (``outgoing``: the scrubber, or the
tenant's form) and remembered with the value, so the request path pays one dict lookup per
attribute; the memory held is at most `budget` entries per metric and attribute.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

__all__ = ["OTHER", "CardinalityGuard"]

OTHER = "__other__"

Outgoing = Callable[[str, str], str]  # (attribute, raw value) -> the value recorded


def _unchanged(attribute: str, value: str) -> str:
    return value


class CardinalityGuard:
    """Per-metric, per-attribute budgets of distinct values; thread-safe, lock-free when warm."""

    def __init__(self, budgets: Mapping[str, int], allowlists: Mapping[str, Iterable[str]] | None = None,
                 on_overflow: Callable[[str, str], None] | None = None,
                 outgoing: Outgoing | None = None):
        self._budgets = dict(budgets)
        self._allow = {key: frozenset(values) for key, values in (allowlists or {}).items()}
        self._on_overflow = on_overflow
        self._outgoing = outgoing or _unchanged
        self._seen: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()
        # Replaced whenever the admitted values are forgotten (after fork): what a caller derived
        # from them (the helpers' bound attribute sets) is valid while `epoch` stays the same object.
        self.epoch = object()

    def guarded(self, attribute: str) -> bool:
        return attribute in self._budgets

    def budget(self, attribute: str) -> int | None:
        return self._budgets.get(attribute)

    def bound(self, metric: str, attribute: str, value: str) -> str:
        """What to record for `value` of `attribute` on `metric`: its outgoing form, or ``__other__``."""
        seen = self._seen.get((metric, attribute))
        if seen is not None:
            known = seen.get(value)  # the hot path takes no lock
            if known is not None:
                return known
        budget = self._budgets.get(attribute)
        allowed = self._allow.get(attribute)
        if budget is None or (allowed is not None and value in allowed):  # not counted
            return self._outgoing(attribute, value)
        with self._lock:
            seen = self._seen.setdefault((metric, attribute), {})
            known = seen.get(value)
            if known is not None:
                return known
            if len(seen) < budget:
                form = seen[value] = self._outgoing(attribute, value)
                return form
        if self._on_overflow is not None:
            self._on_overflow(metric, attribute)
        return OTHER

    def bound_all(self, metric: str, attributes: dict[str, object]) -> dict[str, object]:
        """`attributes` (changed in place) with every guarded string value bounded."""
        for key, value in attributes.items():
            if isinstance(value, str) and key in self._budgets:
                attributes[key] = self.bound(metric, key, value)
        return attributes

    def after_fork(self) -> None:
        """A forked child starts with empty metric stores, so with fresh budgets, and with a lock
        no parent thread can be holding."""
        self._lock = threading.Lock()
        self._seen = {}
        self.epoch = object()
