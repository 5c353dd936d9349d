"""Never break the host app: internal errors are caught, logged once, and counted.

Under pytest they are re-raised so our own bugs surface in tests (ours and our users').
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from opentelemetry import metrics

from otel_crm._internal import semconv

__all__ = ["error_type", "guard", "guarded", "internal_error", "reraise_internal_errors"]

_log = logging.getLogger("otel_crm")
_F = TypeVar("_F", bound=Callable[..., Any])
_seen: set[tuple[str, str]] = set()
_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)
_reraise_override: bool | None = None
_counter: Any = None


def reraise_internal_errors(value: bool | None) -> None:
    """Force (True/False) or restore (None) re-raising of internal errors; for tests."""
    global _reraise_override
    _reraise_override = value


def _should_reraise() -> bool:
    if _reraise_override is not None:
        return _reraise_override
    return "pytest" in sys.modules


def internal_error(component: str, exc: BaseException) -> None:
    """Record an internal failure: one log line per (component, exception type), always counted."""
    global _counter
    key = (component, type(exc).__name__)
    with _lock:
        first = key not in _seen
        _seen.add(key)
    if first:
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
        internal_error(self._component, exc)
        return not _should_reraise()  # True swallows the error


_guards: dict[str, _Guard] = {}


def guard(component: str) -> _Guard:
    """Run a block of instrumentation code; swallow (but record) what it raises."""
    found = _guards.get(component)
    if found is None:
        found = _guards[component] = _Guard(component)
    return found


def guarded(component: str, default: Any = None) -> Callable[[_F], _F]:
    """Decorator form of :func:`guard`; returns `default` when the wrapped code fails."""

    def decorate(function: _F) -> _F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception as exc:
                internal_error(component, exc)
                if _should_reraise():
                    raise
                return default

        return cast(_F, wrapper)

    return decorate


def error_type(exc: BaseException) -> str:
    """``error.type`` of an exception: its canonical (module-qualified) class name.

    Same spelling as the SDK's ``exception.type`` on the exception event, so both join:
    ``requests.exceptions.Timeout``, ``myapp.errors.QuotaExceeded``; builtins stay bare
    (``ValueError``, ``TimeoutError``).
    """
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if not module or module == "builtins" else f"{module}.{cls.__qualname__}"
