"""The possessive-quantifier rewrite used on Python 3.10: same matches as the native form."""

from __future__ import annotations

import re
import sys
import time

import pytest

from otel_crm._internal import regex_compat, scrub_patterns, sql_sanitize
from otel_crm._internal.regex_compat import to_atomic

CASES = [
    (r"a*+b", ["aaab", "b", "aaa", "xaab"]),
    (r"(?:[^']++|'')*+(?:'|\Z)", ["abc'def", "it''s'", "no end", "''''"]),
    (r"(?P<block>\*(?:[^*/]++|\*(?!/)|/(?!\*))*+\*/|\*(?s:.*))", ["* x */ y", "* never closed", "**/"]),
    (r"(?P<kw>(?i:IN))\s*+\(\s*+\x00(?:\s*+,\s*+\x00)++\s*+\)", ["in (\x00, \x00)", "IN(\x00)", "IN ( \x00 ,\x00 )"]),
    (r"[0-9]{2,4}+x", ["12345x", "123x", "1x"]),
    (r"(?<=-)(?P<line>-[^\n]*+)", ["-- comment\nnext", "x--y"]),
]


@pytest.mark.parametrize(("pattern", "inputs"), CASES)
def test_the_rewrite_matches_what_the_native_possessive_matches(pattern: str, inputs: list[str]) -> None:
    rewritten = re.compile(to_atomic(pattern))
    assert "*+" not in to_atomic(pattern) and "++" not in to_atomic(pattern).replace("\\+", "")
    for text in inputs:
        got = [_seen(m) for m in rewritten.finditer(text)]
        if sys.version_info >= (3, 11):
            want = [_seen(m) for m in re.compile(pattern).finditer(text)]
            assert got == want, (pattern, text)


def _seen(match: re.Match[str]) -> tuple[int, int, dict[str, str | None]]:
    """Span and named groups, without the rewrite's own `_p<N>` helper groups."""
    groups = {k: v for k, v in match.groupdict().items() if not k.startswith("_p")}
    return match.start(), match.end(), groups


def test_the_shipped_patterns_rewrite_and_compile() -> None:
    for spec in scrub_patterns.SPECS.values():
        re.compile(to_atomic(spec[4]))
    assert regex_compat.compile(r"x*+").pattern == (r"x*+" if sys.version_info >= (3, 11) else to_atomic(r"x*+"))


def test_the_rewritten_sql_regions_stay_linear() -> None:
    regions = re.compile(to_atomic(sql_sanitize._STANDARD.pattern))
    for size in (20_000, 40_000):
        text = "/*" * size
        started = time.thread_time()
        list(regions.finditer(text))
        if size == 20_000:
            small = time.thread_time() - started
        else:
            large = time.thread_time() - started
    assert large < 3 * small + 0.05
