"""Replace the literals of an SQL statement by ``?``, as the database conventions ask of ``db.query.text``.

Semantic conventions, "Sanitization of db.query.text": sanitization SHOULD replace all literals
(string, numeric, date and time, boolean, interval, binary, hexadecimal) with the placeholder ``?``;
placeholders of a parameterized query SHOULD NOT be sanitized; IN-clauses MAY be collapsed
(``IN (?, ?, ?)`` to ``IN (?)``).

What :func:`sanitize_sql` does, in one left-to-right pass (two when a backslash makes quoting
ambiguous, see below), linear in the length of the statement (1 MB of adversarial SQL costs ~10x its 100 kB,
tested):

- replaced by ``?``: quoted strings (``''`` and ``\\'`` escapes, ``E''``/``N''``/``X''``/``B''``/
  ``U&''``/``_utf8''`` prefixes, PostgreSQL ``$$…$$``/``$tag$…$tag$``), numbers (integers, decimals,
  ``.5``, ``1e-3``, ``0x1F``, the sign right after an operator: ``= -5``; type arguments too:
  ``NUMERIC(10, 2)`` → ``NUMERIC(?, ?)``), ``TRUE``/``FALSE``. The keyword of a typed literal stays:
  ``DATE '2024-01-01'`` → ``DATE ?``, ``INTERVAL '1 day'`` → ``INTERVAL ?``.
- a list of nothing but literals after ``IN`` is collapsed: ``IN (1, 2, 3)`` → ``IN (?)``; a list of
  placeholders is kept per element (``IN (%s, %s)``).
- kept: keywords, identifiers (with digits: ``t1``), ``NULL``, placeholders (``?``, ``?1``, ``%s``,
  ``%(name)s``, ``:name``, ``:1``, ``$1``, ``@p1``), quoted identifiers (``"col"``, ```col```).
- removed: comments (``-- …``, ``/* … */`` also nested, MySQL ``# …`` — a ``#`` then a space), which
  are free text.
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

from otel_crm._internal import regex_compat

__all__ = ["sanitize_sql"]

_MYSQL = frozenset({"mysql", "mariadb"})
_MAX_IDENTIFIER = 128
_MARK = "\x00"  # our own placeholder until the end (a NUL in the input is replaced first)
_KEEP, _COMMENT, _LITERAL = 0, 1, 2  # when two readings overlap, the higher one wins


def _regions(string: str, double_quoted: str) -> re.Pattern[str]:
    # Every region starts with one of a few characters, consumed first so the regex engine can
    # skip ahead to them in C; a lookbehind on that character then picks the kind.
    return regex_compat.compile(
        r"""[-/#$`'"]"""
        r"(?:(?<=-)(?P<line>-[^\n]*+)"
        # A block comment without a nested "/*" ends at its "*/"; with one (PostgreSQL nests,
        # MySQL does not) everything up to the last "*/" goes, which covers both readings.
        r"|(?<=/)(?P<block>\*(?:[^*/]++|\*(?!/)|/(?!\*))*+\*/|\*(?s:.*)\*/|\*(?s:.*))"
        r"|(?<=\#)(?P<hash>(?=[ \t\r\n]|\Z)[^\n]*+)"
        r"|(?<=\$)(?<![\w$]\$)(?P<dollar>(?P<tag>(?:[^\W\d]\w{0,62})?)\$(?s:.*?)(?:\$(?P=tag)\$|\Z))"
        r"|(?<=`)(?P<bq>(?:[^`]++|``)*+(?:`|\Z))"
        rf"|(?<=')(?P<str>{string})"
        rf'|(?<=")(?P<dq>{double_quoted}))')


_STANDARD = _regions(r"(?:[^']++|'')*+(?:'|\Z)", r'(?:[^"]++|"")*+(?:"|\Z)')
_BACKSLASH = _regions(r"(?:[^'\\]++|''|\\(?s:.)?)*+(?:'|\Z)", r'(?:[^"\\]++|""|\\(?s:.)?)*+(?:"|\Z)')
_PREFIX = regex_compat.compile(r"(?<![\w$@#])(?i:[enbxr]|u&|_[a-z0-9]{1,32})\Z")  # E'', N'', X'', _utf8''
# Numbers (a sign folded in right after an operator, or an operator and one space) and booleans,
# in code; again one leading character class, then lookbehinds.
_OPERATOR = r"[=<>(,*/%+\-|&^~!]"
_VALUES = regex_compat.compile(
    r"[-+0-9.TtFf]"
    rf"(?:(?<=[-+])(?:(?<={_OPERATOR}[-+])|(?<={_OPERATOR} [-+]))(?=\.?[0-9])"
    r"(?:[0-9][\w.]*+|\.[0-9][\w.]*+)(?:(?<=[eE])[-+][0-9][\w.]*+)?"
    r"|(?<![\w$@#?:.][0-9.])(?:(?<=[0-9])[\w.]*+|(?<=\.)[0-9][\w.]*+)(?:(?<=[eE])[-+][0-9][\w.]*+)?"
    r"|(?<![\w$@#.][Tt])(?<=[Tt])(?i:rue)(?![\w$@#])|(?<![\w$@#.][Ff])(?<=[Ff])(?i:alse)(?![\w$@#]))")
_IN_LIST = regex_compat.compile(r"(?<![\w$])(?P<kw>(?i:IN))\s*+\(\s*+\x00(?:\s*+,\s*+\x00)++\s*+\)")
_LIKE_BEFORE = regex_compat.compile(r"(?<![\w$])(?i:I?LIKE)\Z")
_CONTROL = regex_compat.compile(r"[\x00-\x1f]")
_CODE_ONLY = " \t\r\n,()=;"  # a gap made only of these holds no value


def _double_quoted_is_value(text: str, start: int, end: int, mysql: bool) -> bool:
    if mysql or end - start > _MAX_IDENTIFIER + 2 or end - start < 2 or text[end - 1] != '"':
        return True
    if text.startswith(".", end):
        return False  # "table"."column"
    before = text[max(0, start - 8):start].rstrip()
    if before[-1:] in ("=", "<", ">") or _LIKE_BEFORE.search(before) is not None:
        return True
    return _CONTROL.search(text, start, end) is not None


def _spans(text: str, regex: re.Pattern[str], mysql: bool) -> list[tuple[int, int, int]]:
    """(start, end, kind) of every string, quoted name or value and comment, left to right."""
    spans: list[tuple[int, int, int]] = []
    append = spans.append
    for match in regex.finditer(text):
        kind = match.lastgroup
        start, end = match.span()
        if kind == "str":
            before = text[start - 1:start]
            prefix = (_PREFIX.search(text, max(0, start - 33), start)
                      if before and (before.isalnum() or before in "_&") else None)
            append((start if prefix is None else prefix.start(), end, _LITERAL))
        elif kind == "dq":
            append((start, end, _LITERAL if _double_quoted_is_value(text, start, end, mysql) else _KEEP))
        elif kind == "bq":  # an unterminated one: fail closed
            append((start, end, _KEEP if end - start >= 2 and text[end - 1] == "`" else _LITERAL))
        else:
            append((start, end, _LITERAL if kind == "dollar" else _COMMENT))
    return spans


def _merge(spans: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    spans.sort()
    merged: list[tuple[int, int, int]] = []
    for start, end, kind in spans:
        if merged and start < merged[-1][1]:
            last_start, last_end, last_kind = merged[-1]
            merged[-1] = (last_start, end if end > last_end else last_end, kind if kind > last_kind else last_kind)
        else:
            merged.append((start, end, kind))
    return merged


def _code(piece: str) -> str:
    return piece if not piece.strip(_CODE_ONLY) else _VALUES.sub(_MARK, piece)


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
    for start, end, kind in spans:
        if start > copied:
            parts.append(_code(text[copied:start]))
        copied = max(copied, end)
        if kind == _KEEP:
            parts.append(text[start:end])
        elif kind == _LITERAL:
            parts.append(_MARK)
        elif not parts or parts[-1][-1:].isspace():  # a comment: removed
            if parts and copied >= len(text):
                parts[-1] = parts[-1].rstrip(" \t")  # "a -- c" -> "a"
            elif text.startswith(" ", copied):
                copied += 1  # "a /* c */ b" -> "a b", not "a  b"
            elif parts and text.startswith("\n", copied):
                parts[-1] = parts[-1].rstrip(" \t")  # "a -- c\nb" -> "a\nb"
        elif copied < len(text) and not text[copied].isspace():
            parts.append(" ")  # a removed comment must not glue two tokens together
    parts.append(_code(text[copied:]))
    result = "".join(parts)
    if "(" in result:
        result = _IN_LIST.sub(r"\g<kw> (" + _MARK + ")", result)
    return result.replace(_MARK, "?")
