"""Replace the literals of an SQL statement by ``?``, as the database conventions ask of ``db.query.text``.

Semantic conventions, "Sanitization of db.query.text": sanitization SHOULD replace all literals
(string, numeric, date and time, boolean, interval, binary, hexadecimal) with the placeholder ``?``;
placeholders of a parameterized query SHOULD NOT be sanitized; IN-clauses MAY be collapsed
(``IN (?, ?, ?)`` to ``IN (?)``).

What :func:`sanitize_sql` does, in one left-to-right pass (two when a backslash makes quoting
ambiguous, see below), linear in the length of the statement:

- replaced by ``?``: quoted strings (``''`` and ``\\'`` escapes, ``E''``/``N''``/``X''``/``B''``/
  ``U&''``/``_utf8''`` prefixes, PostgreSQL ``$$…$$``/``$tag$…$tag$``), numbers (integers, decimals,
  ``.5``, ``1e-3``, ``0x1F``, a sign after an operator: ``= -5``), ``TRUE``/``FALSE``. The keyword of a
  typed literal stays: ``DATE '2024-01-01'`` → ``DATE ?``, ``INTERVAL '1 day'`` → ``INTERVAL ?``.
- a list of nothing but literals after ``IN`` is collapsed: ``IN (1, 2, 3)`` → ``IN (?)``; a list of
  placeholders is kept per element (``IN (%s, %s)``).
- kept: keywords, identifiers (with digits: ``t1``), ``NULL``, placeholders (``?``, ``?1``, ``%s``,
  ``%(name)s``, ``:name``, ``:1``, ``$1``, ``@p1``), quoted identifiers (``"col"``, ```col```).
- removed: comments (``-- …``, ``/* … */`` also nested, ``# …``), which are free text.
- fail closed: an unterminated string, quoted identifier or ``$$`` string hides the rest of the
  statement (``?``), an unterminated comment removes it.

Double quotes: an identifier in standard SQL, so ``"col"`` stays, except where it can only be a value
(right after ``=``, ``<``, ``>`` or ``LIKE``, and not followed by ``.``), when longer than 128
characters (no database allows such identifiers) or holding a control character. MySQL and MariaDB
read ``"…"`` as a string: pass ``system="mysql"``/``"mariadb"`` and every double-quoted token is a value.

Backslashes: ``'it\\'s'`` is one string in MySQL and a string followed by ``s'…`` in standard SQL.
When a backslash appears, both readings are computed and whatever either one sees as a literal or a
comment is hidden, so neither reading can leak a value.
"""

from __future__ import annotations

import re

__all__ = ["sanitize_sql"]

_MYSQL = frozenset({"mysql", "mariadb"})
_MAX_IDENTIFIER = 128
_MARK = "\x00"  # our own placeholder until the end (a NUL in the input is replaced first)
_LITERAL, _COMMENT = True, False
_PREFIX = r"(?:(?<![\w$@#])(?i:[enbxr]|u&|_[a-z0-9]{1,32}))?"
_COMMON = (
    r"(?P<line>--[^\n]*+)"
    r"|(?P<block>/\*)"
    r"|(?P<hash>\#(?=[ \t\r\n]|\Z)[^\n]*+)"
    r"|(?P<dollar>(?<![\w$])\$(?P<tag>(?:[^\W\d]\w{0,62})?)\$(?s:.*?)(?:\$(?P=tag)\$|\Z))"
    r"|(?P<bq>`(?:[^`]++|``)*+(?:`|\Z))"
)
_STANDARD = re.compile(
    _COMMON
    + rf"|(?P<str>{_PREFIX}'(?:[^']++|'')*+(?:'|\Z))"
    + r'|(?P<dq>"(?:[^"]++|"")*+(?:"|\Z))')
_BACKSLASH = re.compile(
    _COMMON
    + rf"|(?P<str>{_PREFIX}'(?:[^'\\]++|''|\\(?s:.)?)*+(?:'|\Z))"
    + r'|(?P<dq>"(?:[^"\\]++|""|\\(?s:.)?)*+(?:"|\Z))')
# In code (outside strings and comments): numbers, with a sign right after an operator, and booleans.
_VALUES = re.compile(
    r"(?:(?<=[=<>(,*/%+\-|&^~!])(?P<ws>[ \t\r\n]*+)[-+])?"
    r"(?<![\w$@#?:.])(?:[0-9][\w.]*+|\.[0-9][\w.]*+)(?:(?<=[eE])[-+][0-9][\w.]*+)?"
    r"|(?<![\w$@#.])(?i:true|false)(?![\w$@#])")
_IN_LIST = re.compile(r"(?<![\w$])((?i:IN)\s*+\(\s*+)\x00(?:\s*+,\s*+\x00)++\s*+\)")
_VALUE_BEFORE = re.compile(r"(?:[=<>]|(?<![\w$])(?i:I?LIKE))\s*+\Z")


def _block_end(text: str, start: int) -> int:
    """End of the block comment opening at `start`. Nested comments (PostgreSQL) or not (MySQL):
    when another ``/*`` comes first, everything up to the last ``*/`` goes, which covers both."""
    close = text.find("*/", start + 2)
    if close < 0:
        return len(text)
    if text.find("/*", start + 2, close) < 0:
        return close + 2
    return text.rfind("*/") + 2


def _double_quoted_is_value(text: str, start: int, end: int, mysql: bool) -> bool:
    if mysql or end - start > _MAX_IDENTIFIER + 2 or not text.endswith('"', start, end) or end - start < 2:
        return True
    body = text[start + 1:end - 1]
    if any(char < " " for char in body):
        return True
    if text.startswith(".", end):
        return False  # "table"."column"
    return _VALUE_BEFORE.search(text, max(0, start - 16), start) is not None


def _spans(text: str, regex: re.Pattern[str], mysql: bool) -> list[tuple[int, int, bool]]:
    """(start, end, literal?) of every string, quoted value and comment, left to right."""
    spans: list[tuple[int, int, bool]] = []
    search = regex.search
    pos = 0
    while True:
        match = search(text, pos)
        if match is None:
            return spans
        kind = match.lastgroup
        start, end = match.span()
        if kind == "block":
            end = _block_end(text, start)
            spans.append((start, end, _COMMENT))
        elif kind in ("line", "hash"):
            spans.append((start, end, _COMMENT))
        elif kind == "bq":
            if end - start < 2 or not text.endswith("`", start, end):  # unterminated: fail closed
                spans.append((start, end, _LITERAL))
        elif kind == "dq":
            if _double_quoted_is_value(text, start, end, mysql):
                spans.append((start, end, _LITERAL))
        else:
            spans.append((start, end, _LITERAL))
        pos = end


def _merge(spans: list[tuple[int, int, bool]]) -> list[tuple[int, int, bool]]:
    spans.sort()
    merged: list[tuple[int, int, bool]] = []
    for start, end, literal in spans:
        if merged and start < merged[-1][1]:
            last_start, last_end, last_literal = merged[-1]
            merged[-1] = (last_start, max(last_end, end), last_literal or literal)
        else:
            merged.append((start, end, literal))
    return merged


def sanitize_sql(text: str, *, system: str | None = None) -> str:
    """`text` with every literal replaced by ``?`` and comments removed (see the module doc).

    `system` is ``db.system.name`` when known; ``mysql``/``mariadb`` read ``"…"`` as strings.
    """
    if _MARK in text:
        text = text.replace(_MARK, "\ufffd")
    mysql = (system or "").lower() in _MYSQL
    spans = _spans(text, _STANDARD, mysql)
    if "\\" in text:  # the other reading too; hide what either one hides
        spans = _merge(spans + _spans(text, _BACKSLASH, mysql))
    parts: list[str] = []
    copied = 0
    for start, end, literal in spans:
        if start > copied:
            parts.append(_VALUES.sub(r"\g<ws>" + _MARK, text[copied:start]))
        if literal:
            parts.append(_MARK)
        elif parts and not parts[-1][-1:].isspace() and not text[end:end + 1].isspace() and end < len(text):
            parts.append(" ")  # a removed comment must not glue two tokens together
        copied = max(copied, end)
    parts.append(_VALUES.sub(r"\g<ws>" + _MARK, text[copied:]))
    result = "".join(parts)
    if "(" in result:
        result = _IN_LIST.sub(r"\1" + _MARK + ")", result)
    return result.replace(_MARK, "?")
