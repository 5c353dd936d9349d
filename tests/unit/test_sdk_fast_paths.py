from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.attributes import BoundedAttributes

from otel_crm._internal import sdk_fast_paths

# --- hot-path shortcuts -------------------------------------------------------------------------------

_CLEAN_CASES: tuple[Any, ...] = (
    "s", "x" * 300, "", 0, -1, 2**70, 2.5, float("nan"), True, False, None, b"\x00", ("a", 1), ["l", 2], (),
    {"k": "v", "n": 1, "f": 1.5, "b": False, "none": None}, {"z": "1", "a": [1, 2]}, {"": 1}, {1: "int key"},
    {"nested": {"a": [1, 2], "b": {"c": "d"}}}, {"long": "y" * 300}, object, 1j, type("Str", (str,), {})("sub"))


@pytest.mark.parametrize("value", _CLEAN_CASES, ids=repr)
@pytest.mark.parametrize("limit", [None, 10])
def test_fast_attribute_cleaning_gives_the_sdks_result(value: Any, limit: int | None) -> None:
    clean = sdk_fast_paths._sdk_functions()[0]._clean_attribute_value
    clean = getattr(clean, "__wrapped__", clean)
    fast = sdk_fast_paths._make_fast_clean(clean)(value, limit)
    expected = clean(value, limit)
    assert fast == expected or repr(fast) == repr(expected) == "nan"
    assert type(fast) is type(expected)


@pytest.mark.parametrize("value", [v for v in _CLEAN_CASES if isinstance(v, dict)] + ["s", 1, None, ("a",)],
                         ids=repr)
def test_fast_measurement_hashing_gives_the_sdks_key(value: Any) -> None:
    match = sdk_fast_paths._sdk_functions()[2]
    hash_attributes = getattr(match._hash_attributes, "__wrapped__", match._hash_attributes)
    if isinstance(value, dict):
        value = {str(k): v for k, v in value.items() if k}  # what a Measurement holds: cleaned
    assert sdk_fast_paths._make_fast_hash(hash_attributes)(value) == hash_attributes(value)


def test_fast_paths_install_once_and_keep_spans_and_metrics_the_same() -> None:
    assert sdk_fast_paths.install_fast_paths() is True
    attributes_module, measurement, match = sdk_fast_paths._sdk_functions()
    installed = (attributes_module._clean_attribute_value, match._hash_attributes)
    assert sdk_fast_paths.install_fast_paths() is True  # idempotent: not wrapped twice
    assert (attributes_module._clean_attribute_value, match._hash_attributes) == installed
    assert measurement._clean_attribute_value is attributes_module._clean_attribute_value
    assert installed[0].__wrapped__ is not None and installed[1].__wrapped__ is not None
    bounded = BoundedAttributes(maxlen=3, attributes={"a": "x" * 20, "b": 1}, immutable=False, max_value_len=5)
    bounded["c"], bounded["d"] = ("t", 2), {"k": "v"}  # type: ignore[assignment]
    assert dict(bounded) == {"b": 1, "c": ("t", 2), "d": {"k": "v"}} and bounded.dropped == 1
