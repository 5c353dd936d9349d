"""The bounded memo (otel_crm/_internal/memo.py)."""

from __future__ import annotations

from typing import Any

from otel_crm._internal.memo import Memo


def test_memo_never_grows_past_its_limit() -> None:
    memo: Memo[int, str] = Memo(8)
    for i in range(100):
        assert memo.put(i, str(i)) == str(i)
        assert len(memo) <= 8
    assert memo.get(99) == "99"  # the latest entries are served


def test_memo_of_an_unhashable_key_is_a_miss_not_an_error() -> None:
    memo: Memo[Any, str] = Memo(8)
    assert memo.lookup(([1], "x")) is None
