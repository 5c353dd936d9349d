"""Possessive quantifiers (``*+``, ``++``, ``?+``, ``{m,n}+``) on every supported Python.

The scrubber's and the SQL sanitizer's patterns use them to stay linear-time on adversarial input;
Python's ``re`` has them from 3.11. On 3.10 each possessive ``X*+`` is rewritten into its exact
equivalent ``(?=(?P<_pN>X*))(?P=_pN)``: a lookahead matches greedily once, the backreference then
consumes exactly that text and is never re-entered for a shorter match, which is what "possessive"
means. The helper groups are named ``_p<N>`` and always close inside the group that holds them, so
``match.lastgroup`` is unchanged for patterns whose possessive parts sit inside named groups.
"""

from __future__ import annotations

import re
import sys

__all__ = ["compile", "to_atomic"]

_NATIVE = sys.version_info >= (3, 11)


def compile(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern if _NATIVE else to_atomic(pattern), flags)


def to_atomic(pattern: str) -> str:
    """`pattern` with every possessive quantifier rewritten as a lookahead + backreference."""
    counter = [0]
    out, end = _sequence(pattern, 0, counter)
    if end != len(pattern):
        raise ValueError(f"unbalanced ')' at {end} in {pattern!r}")
    return out


def _sequence(pattern: str, i: int, counter: list[int]) -> tuple[str, int]:
    """Convert atoms from `i` up to an unmatched ')' (or the end); returns (text, index of ')')."""
    parts: list[str] = []  # each an atom (quantifiable) or an operator such as '|'
    atom_ok = False
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == ")":
            break
        if c == "|":
            parts.append(c)
            atom_ok = False
            i += 1
            continue
        if c in "*+?{" and atom_ok and (c != "{" or re.match(r"\{\d*,?\d*\}", pattern[i:])):
            q_end = i + (pattern.index("}", i) + 1 - i if c == "{" else 1)
            quantifier = pattern[i:q_end]
            if q_end < n and pattern[q_end] == "+":  # possessive
                counter[0] += 1
                name = f"_p{counter[0]}"
                parts[-1] = f"(?=(?P<{name}>{parts[-1]}{quantifier}))(?P={name})"
                i = q_end + 1
            else:
                if q_end < n and pattern[q_end] == "?":  # lazy
                    q_end += 1
                parts[-1] += pattern[i:q_end]
                i = q_end
            atom_ok = False  # a quantified atom takes no second quantifier
            continue
        if c == "\\":
            length = 4 if pattern[i + 1:i + 2] == "x" else 2
            parts.append(pattern[i:i + length])
            i += length
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            parts.append(pattern[i:j + 1])
            i = j + 1
        elif c == "(":
            prefix_end = _group_prefix_end(pattern, i)
            prefix = pattern[i:prefix_end]
            if prefix.startswith("(?P=") or prefix.startswith("(?#"):  # a backreference / comment
                parts.append(prefix)
                i = prefix_end
            else:
                inner, close = _sequence(pattern, prefix_end, counter)
                if close >= n:
                    raise ValueError(f"missing ')' in {pattern!r}")
                parts.append(prefix + inner + ")")
                i = close + 1
        else:
            parts.append(c)
            i += 1
        atom_ok = True
    return "".join(parts), i


def _group_prefix_end(pattern: str, i: int) -> int:
    """Index just past a group's opening: '(', '(?:', '(?P<name>', '(?<=', '(?i:', '(?P=name)'…"""
    if pattern[i + 1:i + 2] != "?":
        return i + 1
    rest = pattern[i + 2:]
    if rest.startswith("P<"):
        return pattern.index(">", i) + 1
    if rest.startswith("P="):
        return pattern.index(")", i) + 1
    if rest.startswith("#"):
        return pattern.index(")", i) + 1
    for opening in ("<=", "<!", "=", "!", ":"):
        if rest.startswith(opening):
            return i + 2 + len(opening)
    match = re.match(r"[aiLmsux-]+:", rest)  # inline flags with a colon: (?i:...), (?s:...)
    if match:
        return i + 2 + match.end()
    raise ValueError(f"unsupported group at {i} in {pattern!r}")
