"""Decoded views of a string, so the scrubber sees ``jane%40example.com`` as ``jane@example.com``.

A view is the text after percent-decoding (repeated, for double- and triple-encoded values) and,
in a query string, with ``+`` read as a space, together with a map from each of its positions back
to the original string. The scrubber scans the views, maps every finding back and replaces only
those original characters: what it leaves keeps its encoding byte for byte.

Cost: one regex pass per decoding level plus work proportional to the number of escapes; the
position map stores one breakpoint per decoded escape and per run of plain text.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import re
from dataclasses import dataclass

__all__ = ["MAX_LEVELS", "View", "needs_views", "views"]

MAX_LEVELS = 3  # %40 -> @, %2540 -> %40 -> @, %252540 -> ... -> @
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_SPACE = re.compile(r"\s")
_PLUS = "\ue000"  # a private-use character standing for a literal "+" while decoding
_NON_ASCII_ESCAPE = re.compile(r"%[89A-Fa-f][0-9A-Fa-f]")
_INVALID = {0xDC80 + byte: 0xFFFD for byte in range(128)}  # surrogateescape'd bytes


@dataclass(frozen=True)
class _Level:
    """Breakpoints of one decoding step: view position `views[i]` is source position `sources[i]`,
    and the positions after it map linearly until the next breakpoint."""

    views: list[int]
    sources: list[int]

    def source(self, position: int) -> int:
        index = bisect.bisect_right(self.views, position) - 1
        return self.sources[index] + position - self.views[index]


class View:
    """A decoded form of a string and the map back to the original."""

    __slots__ = ("_levels", "plain", "text")

    def __init__(self, text: str, levels: tuple[_Level, ...], plain: bool = False) -> None:
        self.text = text
        self._levels = levels
        self.plain = plain  # percent-decoded only (``+`` kept)

    def original(self, position: int) -> int:
        """The original position of view position `position` (0..len(text), end included)."""
        for level in reversed(self._levels):
            position = level.source(position)
        return position


def _decode_once(text: str) -> tuple[str, _Level] | None:
    if _NON_ASCII_ESCAPE.search(text) is None:
        return _decode_ascii(text)
    parts: list[str] = []
    views: list[int] = [0]
    sources: list[int] = [0]
    copied = size = 0
    for match in _ESCAPES.finditer(text):
        start, end = match.span()
        if start > copied:
            parts.append(text[copied:start])
            size += start - copied
        # One view char per decoded char; an invalid byte becomes U+FFFD (its escape stays in the
        # original, which is scanned too).
        chars = bytes.fromhex(text[start:end].replace("%", "")).decode("utf-8", "surrogateescape")
        widths = [len(char.encode("utf-8", "surrogateescape")) for char in chars]
        parts.append(chars.translate(_INVALID))
        views.extend(range(size, size + len(chars) + 1))
        sources.extend(start + 3 * offset for offset in itertools.accumulate(widths, initial=0))
        size += len(chars)
        copied = end
    if copied == 0:
        return None
    parts.append(text[copied:])
    return "".join(parts), _Level(views, sources)


def _decode_ascii(text: str) -> tuple[str, _Level] | None:
    """Every escape is one ASCII char, so positions follow from the lengths of the plain pieces
    between escapes; all of it runs in C loops (1 MB of escapes: ~0.25 s of CPU, linear)."""
    pieces = _ESCAPE.split(text)
    count = len(pieces) - 1
    if not count:
        return None
    if count <= 8:  # the usual URL: a plain loop costs less than setting up the C loops
        views, sources, parts = [0], [0], [pieces[0]]
        view = source = len(pieces[0])
        for piece in pieces[1:]:
            parts.append(chr(int(text[source + 1:source + 3], 16)))
            parts.append(piece)
            views += (view, view + 1)
            sources += (source, source + 3)
            view, source = view + 1 + len(piece), source + 3 + len(piece)
        return "".join(parts), _Level(views, sources)
    chars = bytes.fromhex("".join(_ESCAPE.findall(text)).replace("%", "")).decode("ascii")
    decoded = "".join(itertools.chain.from_iterable(zip(pieces, chars, strict=False))) + pieces[-1]
    lengths = list(map(len, pieces))
    # Escape k sits at sum(lengths[:k+1]) + 3k in the text and at sum(lengths[:k+1]) + k in the view.
    sources_at = list(itertools.accumulate(itertools.chain(
        lengths[:1], map(operator.add, lengths[1:count], itertools.repeat(3)))))
    views_at = list(itertools.accumulate(itertools.chain(
        lengths[:1], map(operator.add, lengths[1:count], itertools.repeat(1)))))
    views = [0] * (2 * count + 1)
    sources = [0] * (2 * count + 1)
    views[1::2] = views_at
    views[2::2] = map(operator.add, views_at, itertools.repeat(1))
    sources[1::2] = sources_at
    sources[2::2] = map(operator.add, sources_at, itertools.repeat(3))
    return decoded, _Level(views, sources)


def _query_range(text: str) -> tuple[int, int] | None:
    """Where ``+`` means a space: after ``?`` (up to ``#``), or all of a bare ``k=v&k2=v2``."""
    mark = text.find("?")
    if mark >= 0:
        end = text.find("#", mark)
        return mark + 1, len(text) if end < 0 else end
    if "=" in text and _SPACE.search(text) is None:
        return 0, len(text)
    return None


def needs_views(text: str) -> bool:
    """Whether `text` reads differently decoded (cheap: two substring checks when it does not)."""
    if "%" in text and _ESCAPE.search(text) is not None:
        return True
    if "+" in text:
        span = _query_range(text)
        return span is not None and text.find("+", span[0], span[1]) >= 0
    return False


def _decoded(text: str, plain: bool) -> View | None:
    levels: list[_Level] = []
    current = text
    for _ in range(MAX_LEVELS):
        step = _decode_once(current) if "%" in current else None
        if step is None:
            break
        current, level = step
        levels.append(level)
    return View(current, tuple(levels), plain) if levels else None


def views(text: str) -> list[View]:
    """The decoded views of `text` (not `text` itself): percent-decoded, and percent-decoded with
    the query string's ``+`` read as a space (only a literal ``+``: ``%2B`` stays a plus) — plus,
    when decoding revealed a URL with its own query string (``note=%2Fpay%3Fcard%3D4111%2B1111…``,
    what ``urlencode`` makes of a URL), that URL read with its ``+`` as spaces."""
    found = _views(text)
    for view in found[:]:
        if "+" not in view.text or not view._levels:
            continue
        mark = view.text.find("?")
        # Only a query string that decoding revealed (its "?" was an escape): in the outer one,
        # %2B stays a plus.
        if mark < 0 or text[view.original(mark)] != "%":
            continue
        end = view.text.find("#", mark)
        end = len(view.text) if end < 0 else end
        if view.text.find("+", mark, end) >= 0:  # same length: the view's map back still holds
            spaced = view.text[:mark] + view.text[mark:end].replace("+", " ") + view.text[end:]
            if all(spaced != other.text for other in found):
                found.append(View(spaced, view._levels))
    return found


def _views(text: str) -> list[View]:
    span = _query_range(text) if "+" in text else None
    if span is not None and text.find("+", span[0], span[1]) < 0:
        span = None
    if span is None:
        plain = _decoded(text, True) if "%" in text else None
        return [] if plain is None else [plain]
    start, end = span
    if "%" not in text or _PLUS in text or "%EE%80%80" in text.upper():
        # (Without escapes, or when our marker could be confused: the spaced text decoded apart.)
        plain = _decoded(text, True) if "%" in text else None
        spaced = text[:start] + text[start:end].replace("+", " ") + text[end:]
        decoded = _decoded(spaced, False)
        # Same length as `text`, so positions of the spaced text are original positions.
        return [*([plain] if plain else []), decoded if decoded is not None else View(spaced, ())]
    # Decode once with the literal pluses marked; the two views differ only there, so they share
    # the map back.
    marked = _decoded(text[:start] + text[start:end].replace("+", _PLUS) + text[end:], True)
    if marked is None:  # a "%" but no escape: only the spaced view differs
        return [View(text[:start] + text[start:end].replace("+", " ") + text[end:], ())]
    return [View(marked.text.replace(_PLUS, "+"), marked._levels, True),
            View(marked.text.replace(_PLUS, " "), marked._levels)]
