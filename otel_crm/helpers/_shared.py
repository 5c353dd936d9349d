"""Small pieces every helper module uses: per-runtime singletons, metric attributes, names, and the
bounded memos that keep per-call work off the hot path (:class:`Memo`, :class:`BoundSets`).

Kept apart from :mod:`otel_crm.helpers._base` (the operation lifecycle); ``_base`` re-exports them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from otel_crm._internal import semconv
from otel_crm._internal.cardinality import OTHER
from otel_crm._internal.memo import Memo
from otel_crm._internal.runtime import Runtime

__all__ = ["FAILURE", "SUCCESS", "Attributes", "BoundSets", "Memo", "PerRuntime", "function_name",
           "metric_attributes"]

SUCCESS = "success"
FAILURE = "failure"

Attributes = dict[str, Any]


def function_name(function: Callable[..., Any]) -> str:
    """``code.function.name``: the fully-qualified name, e.g. ``app.sync.HubSpot.pull``."""
    qualname = getattr(function, "__qualname__", None) or getattr(function, "__name__", repr(function))
    module = getattr(function, "__module__", None)
    return f"{module}.{qualname}" if module else str(qualname)


def metric_attributes(runtime: Runtime, metric: str, base: Attributes, tenant_id: str | None,
                      *, error: str | None = None, outcome_key: str | None = None) -> Attributes:
    """``base`` plus outcome, ``error.type`` and the tenant for one metric, every request-derived
    value scrubbed and within its budget (the runtime's cardinality guard)."""
    attributes = dict(base)
    if outcome_key is not None:
        attributes[outcome_key] = FAILURE if error is not None else SUCCESS
    if error is not None:
        attributes[semconv.ERROR_TYPE] = error
    if tenant_id is not None:
        attributes[semconv.CRM_TENANT_ID] = tenant_id
    return runtime.metric_attributes(metric, attributes)


_T = TypeVar("_T")


class PerRuntime(Generic[_T]):
    """A per-runtime singleton (tracer, instruments, price table): built once through
    ``Runtime.cached``, then served from a one-entry fast path while the runtime stays current."""

    __slots__ = ("_build", "_key", "_last")

    def __init__(self, key: str, build: Callable[[Runtime], _T]) -> None:
        self._key = key
        self._build = build
        self._last: tuple[Runtime, _T] | None = None

    def __call__(self, runtime: Runtime) -> _T:
        last = self._last  # one tuple: read and replaced atomically
        if last is not None and last[0] is runtime:
            return last[1]
        value = runtime.cached(self._key, functools.partial(self._build, runtime))
        self._last = (runtime, value)
        return value


BOUND_SETS_LIMIT: Final = 256


class BoundSets:
    """The metric attribute sets of one helper shape (its base attributes, plus outcome and tenant),
    bound by the runtime's cardinality guard once instead of once per measurement.

    Only sets whose every value the guard admitted are kept: an admitted value keeps its outgoing
    form for as long as the guard remembers it (until a fork gives the child fresh budgets, when
    ``guard.epoch`` changes and these sets are dropped), whereas an overflow (``__other__``) must be
    counted on every measurement, so those sets are bound again each time. At most
    :data:`BOUND_SETS_LIMIT` sets (per-tenant ones included), then they are rebuilt from scratch.
    """

    __slots__ = ("_state",)

    def __init__(self) -> None:
        # (owner, sets): one tuple, read and replaced atomically (threads share a shape)
        self._state: tuple[object, Memo[Any, Any]] = (None, Memo(BOUND_SETS_LIMIT))

    def _sets(self, runtime: Runtime) -> Memo[Any, Any]:
        """This runtime's sets: new ones when the runtime or the guard's epoch (a fork) changed."""
        guard = runtime.cardinality
        owner = runtime if guard is None else guard.epoch
        state = self._state
        if state[0] is not owner:
            state = self._state = (owner, Memo(BOUND_SETS_LIMIT))
        return state[1]

    def get(self, runtime: Runtime, metric: str, key: Any, base: Attributes, tenant_id: str | None,
            *, outcome_key: str | None = None, extra: Attributes | None = None) -> Attributes:
        """What :func:`metric_attributes` gives for a success (``outcome_key`` success), plus `extra`
        (constants, added after the guard as before, e.g. ``gen_ai.token.type``). `key` names the
        set among this shape's (the metric, the tenant, what `base` and `extra` vary by). Callers
        never change what this returns: it is shared by every later measurement."""
        sets = self._sets(runtime)
        found: Attributes | None = sets.get(key)
        if found is not None:
            return found
        attributes = metric_attributes(runtime, metric, base, tenant_id, outcome_key=outcome_key)
        admitted = OTHER not in attributes.values()
        if extra:
            attributes.update(extra)
        if admitted:
            sets.put(key, attributes)
        return attributes

    def variants(self, runtime: Runtime, metric: str, key: Any, base: Attributes, tenant_id: str | None,
                 *, extras: tuple[Attributes, ...]) -> tuple[Attributes, ...]:
        """One bound set (no outcome) plus each of `extras` in turn: several measurements of one metric
        bound once together (``gen_ai.token.type`` input and output), as :meth:`get`."""
        sets = self._sets(runtime)
        known: tuple[Attributes, ...] | None = sets.get(key)
        if known is not None:
            return known
        attributes = metric_attributes(runtime, metric, base, tenant_id)
        result = tuple({**attributes, **extra} for extra in extras)
        if OTHER not in attributes.values():
            sets.put(key, result)
        return result

    def __len__(self) -> int:
        return len(self._state[1])
