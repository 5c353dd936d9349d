"""Never break the host app: internal errors are caught, logged once, and counted.

One reporter, :func:`report_internal_error`, used by every catch site (directly, or through
:func:`guard` around a block). Under pytest our own bugs are re-raised so they surface in tests
(ours and our users'). The health instruments of otel_crm itself are created here, once each:
``crm.internal.errors`` and ``crm.telemetry.dropped``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import Counter, Meter

from otel_crm._internal import semconv

__all__ = ["error_type", "guard", "report_internal_error", "reraise_internal_errors", "telemetry_dropped_counter"]

_log = logging.getLogger("otel_crm")
# (component, exception type) -> first token. `setdefault` is atomic, so no lock: nothing a
# fork could leave held in the child. Bounded by our code's components and exception types.
_seen: dict[tuple[str, str], object] = {}
_reraise_override: bool | None = None
_counter: Counter | None = None


def reraise_internal_errors(value: bool | None) -> None:
    """Force (True/False) or restore (None) re-raising of internal errors; for tests."""
    global _reraise_override
    _reraise_override = value


def _should_reraise() -> bool:
    if _reraise_override is not None:
        return _reraise_override
    return "pytest" in sys.modules


def report_internal_error(component: str, exc: BaseException, *, raise_in_tests: bool = True) -> None:
    """Record an internal failure: one log line per (component, exception type), always counted
    in ``crm.internal.errors``; then re-raise `exc` under pytest.

    `raise_in_tests=False` for failures that are not our bugs (the app's tenant resolver, a port
    in use) and where the caller must carry on even in tests (the next fork hook).
    """
    global _counter
    token = object()
    if _seen.setdefault((component, type(exc).__name__), token) is token:
        _log.warning("otel_crm: internal error in %s (further ones are only counted): %r",
                     component, exc, exc_info=exc)
    try:
        if _counter is None:
            _counter = metrics.get_meter("otel_crm").create_counter(
                semconv.CRM_INTERNAL_ERRORS, unit="{error}",
                description="Internal errors of otel_crm, caught so the host app kept running.")
        _counter.add(1, {semconv.CRM_COMPONENT: component, semconv.ERROR_TYPE: type(exc).__name__})
    except Exception:  # noqa: S110 - counting must never fail the caller either
        pass
    if raise_in_tests and _should_reraise():
        raise exc


class _Guard:
    """Stateless, so one per component is shared; a class, not @contextmanager, because it runs
    several times per request and a generator-based context manager costs several times more."""

    __slots__ = ("_component",)

    def __init__(self, component: str):
        self._component = component

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        report_internal_error(self._component, exc, raise_in_tests=False)
        return not _should_reraise()  # True swallows the error; under pytest it propagates as is


_guards: dict[str, _Guard] = {}


def guard(component: str) -> _Guard:
    """Run a block of instrumentation code; swallow (but report) what it raises."""
    found = _guards.get(component)
    if found is None:
        found = _guards[component] = _Guard(component)
    return found


def telemetry_dropped_counter(meter: Meter) -> Counter:
    """``crm.telemetry.dropped``: telemetry we dropped rather than block the app or send it
    unscrubbed, by ``crm.signal`` and ``crm.drop.reason``. Created here only."""
    return meter.create_counter(semconv.CRM_TELEMETRY_DROPPED, unit="{item}",
                                description="Telemetry otel_crm dropped instead of blocking the app.")


def error_type(exc: BaseException) -> str:
    """``error.type`` of an exception: its canonical (module-qualified) class name.

    Same spelling as the SDK's ``exception.type`` on the exception event, so both join:
    ``requests.exceptions.Timeout``, ``myapp.errors.QuotaExceeded``; builtins stay bare
    (``ValueError``, ``TimeoutError``).
    """
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if not module or module == "builtins" else f"{module}.{cls.__qualname__}"
