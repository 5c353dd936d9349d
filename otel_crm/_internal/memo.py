"""A bounded memo: the one cache shape for values derived from what callers pass (names, shapes,
tenants), which must never grow with them."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["Memo"]

_K = TypeVar("_K")
_V = TypeVar("_V")


class Memo(dict[_K, _V]):
    """A bounded memo: at most `limit` entries, forgotten all at once when full (the values are
    cheap to rebuild; what matters is that a caller's distinct values can never grow it).

    A dict, so a hit costs one C call (``get``); ``get`` of an unhashable key raises TypeError
    like a dict's: :meth:`lookup` is the never-raising form for arguments not yet checked."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def lookup(self, key: _K) -> _V | None:
        try:
            return self.get(key)
        except Exception:  # an unhashable (or oddly hashing) argument: never memoised
            return None

    def put(self, key: _K, value: _V) -> _V:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value
