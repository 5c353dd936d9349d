"""Hot-path shortcuts into SDK internals: the other half of the SDK-compatibility layer (sdk_compat.py),
and like it the only place allowed private SDK names. Installed by ``configure()``; each shortcut is
probed against the SDK function it stands in for, and is left out (one warning) if they differ."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otel_crm._internal.sdk_compat import check_feature

__all__ = ["install_fast_paths"]


# --- hot-path shortcuts -----------------------------------------------------------------------------
# Cleaning every attribute value (`opentelemetry.attributes._clean_attribute_value`: isinstance and
# ABC checks) and hashing every measurement's attributes (`_view_instrument_match._hash_attributes`:
# recursive, sorted by a key function) are the largest own-time entries of an instrumented request.
# The shortcuts answer the common exact types (str within the limit, int, float, bool, None, bytes;
# a dict of those with non-empty str keys) with the SDK's very result; anything else goes to the SDK.

_SCALAR_SET = frozenset({str, int, float, bool, type(None), bytes})
# Values the SDK cleans without a warning (the probe runs at install: it must not log).
_PROBES: tuple[Any, ...] = ("s", "abcdef", 3, 2.5, True, None, b"b", ("a", 1), ["l"], {"k": "v", "n": 1, "b": False},
                            {"z": "1", "a": 1.5, "m": None}, {"n": {"a": [1, 2]}, "t": ("x",)})


def _sdk_functions() -> tuple[Any, Any, Any]:
    import opentelemetry.attributes as attributes_module
    from opentelemetry.sdk.metrics._internal import _view_instrument_match, measurement

    return attributes_module, measurement, _view_instrument_match


def _make_fast_clean(clean: Callable[[Any, int | None], Any]) -> Callable[[Any, int | None], Any]:
    def fast_clean(value: Any, max_string_value_length: int | None) -> Any:
        kind = type(value)
        if kind is str:
            if max_string_value_length is None or len(value) <= max_string_value_length:
                return value
        elif kind is int or kind is float or kind is bool or value is None or kind is bytes:
            return value
        elif kind is dict:
            cleaned = {}
            for key, item in value.items():
                if type(key) is not str or not key:
                    return clean(value, max_string_value_length)  # the SDK's warnings and rules
                cleaned[key] = fast_clean(item, max_string_value_length)
            return cleaned
        return clean(value, max_string_value_length)

    fast_clean.__wrapped__ = clean  # type: ignore[attr-defined]
    return fast_clean


def _make_fast_hash(hash_attributes: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def fast_hash(value: Any) -> Any:
        if type(value) is not dict:
            return hash_attributes(value)
        out = []
        try:
            keys = sorted(value)
        except TypeError:  # keys of mixed types: the SDK sorts them by their text
            return hash_attributes(value)
        for key in keys:
            item = value[key]
            kind = type(item)
            if type(key) is not str or kind not in _SCALAR_SET:
                return hash_attributes(value)
            out.append((key, (kind.__name__, item)))
        return ("mapping", tuple(out))

    fast_hash.__wrapped__ = hash_attributes  # type: ignore[attr-defined]
    return fast_hash


def _fast_paths_equal() -> bool:
    attributes_module, measurement, match = _sdk_functions()
    clean = getattr(attributes_module._clean_attribute_value, "__wrapped__", attributes_module._clean_attribute_value)
    hash_attributes = getattr(match._hash_attributes, "__wrapped__", match._hash_attributes)
    if getattr(measurement._clean_attribute_value, "__wrapped__", measurement._clean_attribute_value) is not clean:
        return False
    fast_clean, fast_hash = _make_fast_clean(clean), _make_fast_hash(hash_attributes)
    for value in _PROBES:
        if any(fast_clean(value, limit) != clean(value, limit) for limit in (None, 6)):
            return False
        hashable = isinstance(value, dict) and all(isinstance(k, str) and k for k in value)
        if hashable and fast_hash(clean(value, None)) != hash_attributes(clean(value, None)):
            return False
    return True


def install_fast_paths() -> bool:
    """Put the attribute-cleaning and measurement-hashing shortcuts in place (process-wide, once)."""
    if not check_feature("attribute cleaning and hashing", "the SDK's own (slower) functions stay",
                  _fast_paths_equal):
        return False
    attributes_module, measurement, match = _sdk_functions()
    if not hasattr(attributes_module._clean_attribute_value, "__wrapped__"):
        fast_clean = _make_fast_clean(attributes_module._clean_attribute_value)
        attributes_module._clean_attribute_value = measurement._clean_attribute_value = fast_clean
    if not hasattr(match._hash_attributes, "__wrapped__"):
        match._hash_attributes = _make_fast_hash(match._hash_attributes)
    return True
