"""Argument checks at the helpers' boundary: a misuse never becomes an exception in business code.

A rejected argument is ignored (a name falls back to ``_OTHER``, a number is not recorded), noted
on the span as ``crm.helper.invalid_argument`` (``{call}.{parameter}``, never the value) and handed
to the safety net as an :class:`InvalidArgumentError`: counted in ``crm.internal.errors``, logged
once, and re-raised under pytest so the misuse surfaces in the user's tests.

Numbers must be whole (an ``int``, an integral ``float``, or anything with ``__index__`` such as
numpy integers), not ``bool``, finite, ``>= 0`` and below a bound: :data:`MAX_TOKENS` per
``record_usage`` call (above it the count is a bug, and pricing it would record absurd costs),
:data:`MAX_COUNT` for records, results and indexes (OTLP carries int64; a sum must not overflow).
Names must be non-blank strings of at most :data:`MAX_NAME_LENGTH` characters.
"""

from __future__ import annotations

import math
import operator
import sys
from typing import Any, Final

from otel_crm._internal import semconv
from otel_crm._internal.safety import guard

__all__ = [
    "COUNT",
    "INVALID_ARGUMENT",
    "MAX_COUNT",
    "MAX_NAME_LENGTH",
    "MAX_NOTED",
    "MAX_TOKENS",
    "NAME",
    "OTHER",
    "TOKENS",
    "VALID",
    "Arguments",
    "InvalidArgumentError",
    "checked_count",
    "checked_name",
    "is_name",
    "noted",
    "reject",
]

MAX_TOKENS: Final = 10**9
MAX_COUNT: Final = 10**12
MAX_NAME_LENGTH: Final = 256
MAX_NOTED: Final = 16
OTHER: Final = "_OTHER"
INVALID_ARGUMENT: Final = semconv.CRM_HELPER_INVALID_ARGUMENT


class InvalidArgumentError(TypeError, ValueError):
    """A helper was called with an argument it cannot record (a TypeError and a ValueError, so
    either ``except`` in a user's test catches it). Raised only under pytest; counted otherwise."""


def checked_count(value: object, maximum: int) -> int | None:
    """`value` as an int in ``[0, maximum]``, or None when it is not a whole number in range."""
    if type(value) is int:  # the common case first
        return value if 0 <= value <= maximum else None
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        number = int(value)
    elif isinstance(value, int):
        number = value
    else:
        try:
            number = operator.index(value)  # type: ignore[arg-type]
        except Exception:
            return None
    return number if 0 <= number <= maximum else None


def checked_name(value: object) -> str | None:
    """`value` when it is a usable name (a non-blank str of at most MAX_NAME_LENGTH characters)."""
    if isinstance(value, str) and 0 < len(value) <= MAX_NAME_LENGTH and not value.isspace():
        return value
    return None


def is_name(value: object) -> bool:
    """The fast check of a helper's construction: a plain str that :func:`checked_name` accepts
    (anything else, str subclasses included, goes through :class:`Arguments`)."""
    return type(value) is str and 0 < len(value) <= MAX_NAME_LENGTH and not value.isspace()


def _describe(value: object) -> str:
    """What was passed, without the value itself unless it is a number (a string could be personal
    data: it goes to the log)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = repr(value)
        return text if len(text) <= 32 else f"{type(value).__name__} of {len(text)} digits"
    if isinstance(value, str):
        return f"str of {len(value)} characters"
    return type(value).__name__


def _call_site() -> str:
    """``file:line`` of the first frame outside otel_crm: where the user made the call (only
    computed on a misuse, which is rare)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("otel_crm."):
        frame = frame.f_back  # type: ignore[assignment]
    return f" at {frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else ""


def reject(component: str, argument: str, value: object, expected: str) -> None:
    """Report one misused argument (``argument`` is ``call.parameter``): counted, logged once,
    re-raised under pytest."""
    call, _, parameter = argument.partition(".")
    message = (f"otel_crm: {call}({parameter}={_describe(value)}){_call_site()}: expected {expected}; the "
               f"argument was ignored (noted as {INVALID_ARGUMENT} on the span, counted in "
               f"{semconv.CRM_INTERNAL_ERRORS})")
    with guard(component):
        raise InvalidArgumentError(message)


def noted(previous: tuple[str, ...], argument: str) -> tuple[str, ...]:
    """`previous` plus `argument`, each name once, at most MAX_NOTED of them."""
    if argument in previous or len(previous) >= MAX_NOTED:
        return previous
    return (*previous, argument)


NAME: Final = f"a non-blank str of at most {MAX_NAME_LENGTH} characters"
COUNT: Final = "a whole number from 0 to 10**12"
TOKENS: Final = "a whole number of tokens from 0 to 10**9 per call"


class Arguments:
    """Checks one helper call's arguments (``workflow(...)``, ``step(...)``…) and keeps the names
    of those it rejected, for the spans the helper will start."""

    __slots__ = ("_call", "_component", "rejected")

    def __init__(self, component: str, call: str) -> None:
        self._component = component
        self._call = call
        self.rejected: tuple[str, ...] = ()

    def _reject(self, parameter: str, value: object, expected: str) -> None:
        argument = f"{self._call}.{parameter}"
        self.rejected = noted(self.rejected, argument)
        reject(self._component, argument, value, expected)

    def name(self, parameter: str, value: object, fallback: str = OTHER) -> str:
        name = checked_name(value)
        if name is None:
            self._reject(parameter, value, NAME)
            return fallback
        return name

    def optional_name(self, parameter: str, value: object) -> str | None:
        """None stays None; anything else must be a name (rejected: None)."""
        if value is None:
            return None
        name = checked_name(value)
        if name is None:
            self._reject(parameter, value, f"None or {NAME}")
        return name

    def optional_count(self, parameter: str, value: object) -> int | None:
        if value is None:
            return None
        number = checked_count(value, MAX_COUNT)
        if number is None:
            self._reject(parameter, value, f"None or {COUNT}")
        return number

    def note(self, attributes: dict[str, Any]) -> dict[str, Any]:
        """`attributes` with the rejected arguments noted (unchanged when there are none)."""
        if self.rejected:
            attributes[INVALID_ARGUMENT] = self.rejected
        return attributes


VALID: Final = Arguments("", "")
"""Shared by helper calls whose arguments all passed the fast checks (it never rejects anything)."""
