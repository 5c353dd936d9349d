"""Small pieces every helper module uses: per-runtime singletons, metric attributes, names.

Kept apart from :mod:`otel_crm.helpers._base` (the operation lifecycle); ``_base`` re-exports them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from otel_crm._internal import semconv
from otel_crm._internal.runtime import Runtime

__all__ = ["FAILURE", "SUCCESS", "Attributes", "PerRuntime", "function_name", "metric_attributes"]

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
