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
import re
from dataclasses import dataclass

__all__ = ["MAX_LEVELS", "View", "needs_views", "views"]

MAX_LEVELS = 3  # %40 -> @, %2540 -> %40 -> @, %252540 -> ... -> @
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_SPACE = re.compile(r"\s")


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

    __slots__ = ("_levels", "text")

    def __init__(self, text: str, levels: tuple[_Level, ...]) -> None:
        self.text = text
        self._levels = levels

    def original(self, position: int) -> int:
        """The original position of view position `position` (0..len(text), end included)."""
        for level in reversed(self._levels):
            position = level.source(position)
        return position


def _decode_once(text: str) -> tuple[str, _Level] | None:
    parts: list[str] = []
    views: list[int] = [0]
    sources: list[int] = [0]
    copied = size = 0
    for match in _ESCAPES.finditer(text):
        start, end = match.span()
        if start > copied:
            parts.append(text[copied:start])
            size += start - copied
        raw = bytes.fromhex(text[start:end].replace("%", ""))
        if raw.isascii():
            parts.append(raw.decode("ascii"))
            views.extend(range(size, size + len(raw)))
            sources.extend(range(start, end, 3))
            size += len(raw)
        else:
            offset = start
            for char in raw.decode("utf-8", "surrogateescape"):
                if "\udc80" <= char <= "\udcff":  # an invalid byte stays as its escape
                    width, piece = 3, text[offset:offset + 3]
                else:
                    width, piece = 3 * len(char.encode("utf-8")), char
                for index in range(len(piece)):
                    views.append(size + index)
                    sources.append(offset + index)
                parts.append(piece)
                size += len(piece)
                offset += width
        views.append(size)
        sources.append(end)
        copied = end
    if copied == 0:
        return None
    parts.append(text[copied:])
    return "".join(parts), _Level(views, sources)


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


def _decoded(text: str) -> View | None:
    levels: list[_Level] = []
    current = text
    for _ in range(MAX_LEVELS):
        step = _decode_once(current)
        if step is None:
            break
        current, level = step
        levels.append(level)
    return View(current, tuple(levels)) if levels else None


def views(text: str) -> list[View]:
    """The decoded views of `text` (not `text` itself): percent-decoded, and percent-decoded with
    the query string's ``+`` read as a space (only a literal ``+``: ``%2B`` stays a plus)."""
    found: list[View] = []
    plain = _decoded(text) if "%" in text else None
    if plain is not None:
        found.append(plain)
    span = _query_range(text) if "+" in text else None
    if span is not None and text.find("+", span[0], span[1]) >= 0:
        start, end = span
        spaced = text[:start] + text[start:end].replace("+", " ") + text[end:]
        decoded = _decoded(spaced)
        # Same length as `text`, so positions of the spaced text are original positions.
        found.append(decoded if decoded is not None else View(spaced, ()))
    return found
