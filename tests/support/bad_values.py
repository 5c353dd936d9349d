"""A bad value for every standard OTEL_* variable otel_crm checks, derived from the settings registry,
so a variable added to the registry is tried without editing a list (integration tests, reliability)."""

from __future__ import annotations

from otel_crm._internal.settings import REGISTRY
from otel_crm._internal.settings_parse import Kind, Setting

__all__ = ["bad_standard_values"]

# A value each kind refuses. Plain strings and unchecked lists accept anything: nothing to try.
_BAD = {Kind.BOOL: "abc", Kind.INT: "abc", Kind.FLOAT: "abc", Kind.ENUM: "abc", Kind.ENUM_LIST: "abc",
        Kind.MAPPING: "abc", Kind.JSON: "{", Kind.JSON_LIST: "["}


def _bad(entry: Setting) -> str | None:
    if entry.kind in _BAD:
        return _BAD[entry.kind]
    if entry.check is None:
        return None
    # Checked strings (limits, choices, entry-point names, files) refuse `abc`; checked lists
    # (regular expressions, propagator and detector names, gRPC codes) refuse `(`.
    return "(" if entry.kind is Kind.LIST else "abc"


def bad_standard_values() -> dict[str, str]:
    """Every standard (not OTEL_CRM_*) variable of the registry that can be bad, with a bad value."""
    values: dict[str, str] = {}
    for entry in REGISTRY:
        bad = _bad(entry)
        if bad is None:
            continue
        for variable in entry.env:
            # An endpoint's default is localhost, not the test's collector: tried by the unit tests
            # and the reliability suite, where nothing needs to arrive.
            if not variable.startswith("OTEL_CRM_") and not variable.endswith("_ENDPOINT"):
                values[variable] = bad
    return values
