"""The linear-time check itself (tests/support/linear_time.py) fails when it should."""

from __future__ import annotations

import re

import pytest

from tests.support import linear_time
from tests.support.linear_time import assert_linear


def test_a_linear_scan_passes() -> None:
    assert assert_linear(lambda text: re.findall(r"a+b", text), lambda n: "a" * n + "b", "linear") < 1.0


def test_a_quadratic_path_fails_on_growth() -> None:
    # The classic backtracking trap: `a+c` tries every start of a run of "a" and scans the rest of
    # it, so 10x the input costs 100x (the line is 50x). A 33rd of the text keeps each large run
    # under a second (a failing check measures twice).
    with pytest.raises(AssertionError, match=r"quadratic: 1 MB cost .*x the"):
        assert_linear(lambda text: re.search(r"a+c", text[:len(text) // 33]), lambda n: "a" * n, "quadratic")


def test_a_linear_but_slow_path_fails_on_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linear_time, "per_megabyte_bound", lambda: 0.0)
    with pytest.raises(AssertionError, match=r"slow: .*s of CPU for 1 MB \(bound 0.0 s\)"):
        assert_linear(lambda text: text.count("a"), lambda n: "a" * n, "slow")
