"""Scrub secrets and personal data from telemetry before it leaves the process.

What is detected (``scrub_patterns``): emails, phones, cards, IBANs, US SSNs, credentials (bearer,
basic, vendor API keys, JWTs, PEM private keys, URL userinfo, ``password=``/``"token":`` values…).
Deny-listed keys (``password``, ``token``, ``cookie``… also as a ``.``/``_``/``-`` suffix;
OTEL_CRM_SCRUB_KEYS) lose their whole value. Resource attributes are not scrubbed (configuration).

Encodings (``scrub_decode``): a string with percent-escapes, or a query string with ``+``, is also
scanned decoded; findings are mapped back and only their original characters replaced, so what is
left keeps its encoding byte for byte.

Escape hatches: an allow-listed key (OTEL_CRM_SCRUB_ALLOW_KEYS) keeps its value unscanned unless it
is also deny-listed; a finding inside a match of an allow pattern (OTEL_CRM_SCRUB_ALLOW_PATTERNS) is
kept; a callback, given a :class:`ScrubMatch`, returns ``"keep"`` or ``"redact"`` — anything else,
or an exception (counted as an internal error), redacts.

Markers: ``[REDACTED:<kind>]`` in place of the finding, keeping context (``token=[REDACTED:secret]``);
a deny-listed value becomes ``[REDACTED]``. Hash mode writes ``[HASH:<16 hex of HMAC-SHA256(salt,
normalised value)>]`` (emails lower-cased, phones and cards digits only) so equal values join; with
no OTEL_CRM_SCRUB_SALT the salt is random per process. Scrubbing twice changes nothing.

Cost: substring checks pick the pattern families that can match; those run as one linear regex.
Strings over ``max_scan_chars`` are scanned in overlapping windows (``scrub_patterns.matches``).
Custom and allow patterns run as written; their cost is their author's.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.util.types import AttributeValue

from otel_crm._internal import regex_compat, scrub_decode
from otel_crm._internal import scrub_patterns as sp
from otel_crm._internal.safety import guard
from otel_crm._internal.scrub_patterns import DENIED_KEYS, KEEP, REDACT, ScrubCallback, ScrubMatch
from otel_crm._internal.sdk_compat import attributes_dict
from otel_crm._internal.settings import Settings

__all__ = ["DENIED_KEYS", "KEEP", "REDACT", "ScrubCallback", "ScrubMatch", "Scrubber"]

_log = logging.getLogger("otel_crm")

_Finding = tuple[int, int, str, str, str]  # (start, end, kind, rule, value) in the scanned text
_NORMAL, _DENIED, _ALLOWED = 0, 1, 2

_shared: dict[str, Any] = {}  # the random per-process salt
_salt_lock = threading.Lock()


def _random_salt() -> bytes:
    with _salt_lock:
        if "salt" not in _shared:
            _shared["salt"] = os.urandom(32)
            _log.info("otel_crm: OTEL_CRM_SCRUB_SALT is empty; hashing with a random per-process salt, "
                      "so hashed values join only within this process")
        return _shared["salt"]  # type: ignore[no-any-return]


class Scrubber:
    """Finds secrets and personal data in strings and attribute values; thread-safe."""

    _CACHE_MAX = 4096
    _CACHE_LEN = 200

    def __init__(self, *, mode: str = "redact", salt: str = "", extra_patterns: Sequence[str] = (),
                 extra_keys: Sequence[str] = (), max_scan_chars: int = 8192,
                 allow_keys: Sequence[str] = (), allow_patterns: Sequence[str] = (),
                 callback: ScrubCallback | None = None, strict: bool = False) -> None:
        if mode not in ("redact", "hash"):
            raise ValueError(f"scrub mode must be redact or hash, not {mode!r}")
        if callback is not None and not callable(callback):
            raise TypeError("scrub callback must be callable")
        self.mode = mode
        self._hmac: Any = None
        if mode == "hash":
            key = salt.encode("utf-8") if salt else _random_salt()
            self._hmac = hmac.new(key, digestmod=hashlib.sha256)
        # An invalid pattern is one line and skipped; strict mode refuses it (a secret pattern
        # silently missing would let what it names leave).
        self._custom = sp.compile_patterns(extra_patterns, "OTEL_CRM_SCRUB_PATTERNS", "scrub_patterns",
                                           strict)
        self._allow = sp.compile_patterns(allow_patterns, "OTEL_CRM_SCRUB_ALLOW_PATTERNS",
                                       "scrub_allow_patterns", strict)
        self._callback = callback
        keys = DENIED_KEYS + tuple(_norm_key(k) for k in extra_keys if k.strip())
        self._deny_exact = frozenset(keys)
        self._deny_suffix = tuple(sep + key for key in keys for sep in (".", "_"))
        self._allow_keys = frozenset(_norm_key(k) for k in allow_keys if k.strip())
        self._key_cache: dict[str, int] = {}
        self._clean: set[str] = set()
        self._variants: dict[int, re.Pattern[str]] = {}
        self._alone: dict[str, re.Pattern[str]] = {}  # single patterns, for long strings
        self._max_scan = max(256, int(max_scan_chars))
        self._overlap = min(1024, self._max_scan // 4)
        self._simple = not self._allow and callback is None  # plain strings: the one-pass path

    @classmethod
    def from_settings(cls, settings: Settings, *, callback: ScrubCallback | None = None) -> Scrubber | None:
        if settings.scrub_mode == "off":
            return None
        return cls(mode=settings.scrub_mode, salt=settings.scrub_salt,
                   extra_patterns=settings.scrub_patterns, extra_keys=settings.scrub_keys,
                   allow_keys=settings.scrub_allow_keys, allow_patterns=settings.scrub_allow_patterns,
                   callback=callback, strict=settings.strict)

    # --- strings ---------------------------------------------------------------------------------
    def scrub_text(self, text: str, *, key: str | None = None, signal: str | None = None) -> str:
        """`text` with every finding replaced; the same object when nothing matched. `key` and
        `signal` say where the text was found (for the callback)."""
        if text in self._clean:
            return text
        cacheable = True
        if self._simple and (("%" not in text and "+" not in text) or not scrub_decode.needs_views(text)):
            # The hot path: one pass of the families' regex, then the custom patterns.
            result = text
            mask = sp.families(text)
            if mask:
                result = self._sub(self._variants.get(mask) or self._variant(mask), result, self._replace)
            for custom in self._custom:
                result = self._sub(custom, result, self._replace_custom)
        else:
            result, cacheable = self._scrub_views(text, key, signal)
        if result == text:
            if cacheable and len(text) <= self._CACHE_LEN:
                if len(self._clean) >= self._CACHE_MAX:
                    self._clean.clear()
                self._clean.add(text)
            return text
        return result

    def _regex_for(self, text: str, percent_only: bool = False) -> re.Pattern[str] | None:
        mask = sp.families(text)
        if percent_only:  # only the patterns a percent-escape can sit inside
            mask = (mask & sp.PERCENT_FAMILIES) | sp.PERCENT_ONLY if mask & sp.PERCENT_FAMILIES else 0
        if not mask:
            return None
        return self._variants.get(mask) or self._variant(mask)

    def _variant(self, mask: int) -> re.Pattern[str]:
        branches = [f"(?P<{name}>{spec[4]})" for name, spec in sp.SPECS.items() if spec[0] & mask
                    and (not mask & sp.PERCENT_ONLY or name in sp.PERCENT_SPECS)]
        regex = regex_compat.compile("|".join(branches), re.ASCII)
        self._variants[mask] = regex
        return regex

    def _singles(self, regex: re.Pattern[str]) -> list[re.Pattern[str]]:
        """The patterns of an alternation (a variant), each compiled on its own (cached)."""
        return [self._alone.get(name) or self._alone.setdefault(
                    name, regex_compat.compile(f"(?P<{name}>{sp.SPECS[name][4]})", re.ASCII))
                for name in regex.groupindex if name in sp.SPECS]

    def _sub(self, regex: re.Pattern[str], text: str, replace: Callable[[re.Match[str]], str]) -> str:
        if len(text) <= self._max_scan:
            return regex.sub(replace, text)
        parts: list[str] = []
        copied = 0
        for match in sp.matches(regex, text, self._max_scan, self._overlap):
            parts.append(text[copied:match.start()])
            parts.append(replace(match))
            copied = match.end()
        parts.append(text[copied:])
        return "".join(parts)

    def _finding(self, match: re.Match[str]) -> _Finding | None:
        name = match.lastgroup or ""
        spec = sp.SPECS[name]
        length = len(match.group(0)) if spec[3] is None else sp.valid_length(spec[3], match.group(0))
        if not length:
            return None
        group: str | int = 0
        for group in spec[2]:
            if match.start(group) >= 0:
                break
        start, end = match.span(group)
        if not spec[2]:  # a phone cut short of a following number: only the valid part
            end = start + length
        return start, end, spec[1], name, match.group(group)[:end - start]

    def _replace(self, match: re.Match[str]) -> str:
        spec = sp.SPECS[match.lastgroup or ""]
        found = match.group(0)
        length = len(found) if spec[3] is None else sp.valid_length(spec[3], found)
        if not length:
            return found
        if not spec[2]:
            return self._marker(spec[1], found[:length]) + found[length:]
        for group in spec[2]:
            start, end = match.span(group)
            if start >= 0:
                break
        offset = match.start()
        return found[:start - offset] + self._marker(spec[1], match.group(group)) + found[end - offset:]

    def _replace_custom(self, match: re.Match[str]) -> str:
        found = match.group(0)
        return self._marker("custom", found) if found else found

    def _findings(self, text: str, percent_only: bool = False) -> list[_Finding]:
        found: list[_Finding] = []
        regex = self._regex_for(text, percent_only)
        # A long string is scanned pattern by pattern: each then skips ahead in C to where it can
        # start (3x faster on dense input than one alternation tried at every position), and
        # overlapping findings of two patterns are merged into one marker (fail closed).
        regexes = [regex] if regex is None or len(text) <= self._max_scan else self._singles(regex)
        for each in regexes:
            for match in sp.matches(each, text, self._max_scan, self._overlap) if each is not None else ():
                finding = self._finding(match)
                if finding is not None:
                    found.append(finding)
        for custom in self._custom:
            for match in sp.matches(custom, text, self._max_scan, self._overlap):
                if match.end() > match.start():
                    found.append((match.start(), match.end(), "custom", "custom", match.group(0)))
        if found and self._allow:
            found = self._not_allowed(text, found)
        return found

    def _not_allowed(self, text: str, found: list[_Finding]) -> list[_Finding]:
        """Drop the findings that lie inside one match of an allow pattern."""
        safe = [match.span() for allow in self._allow
                for match in sp.matches(allow, text, self._max_scan, self._overlap) if match.end() > match.start()]
        return sp.outside(found, safe) if safe else found

    def _scrub_views(self, text: str, key: str | None, signal: str | None) -> tuple[str, bool]:
        """Scan `text` and its decoded views; replace, in `text`, what any of them found. Returns
        the result and whether an unchanged result may be cached as clean."""
        views = scrub_decode.views(text)
        # With a percent-decoded view, the text itself only adds what a pattern finds across an
        # escape (password=a%26b: the view's value stops at "&"); the view finds the rest.
        spans = self._findings(text, percent_only=any(view.plain for view in views))
        for view in views:
            for start, end, kind, rule, value in self._findings(view.text):
                spans.append((view.original(start), view.original(end), kind, rule, value))
        if not spans:
            return text, True
        spans = list(dict.fromkeys(spans))  # the same finding seen in two views counts once
        cacheable = True
        if self._callback is not None:
            redact = [item for item in spans if not self._keep(item, key, signal)]
            if len(redact) < len(spans):
                cacheable = False  # the decision may depend on key and signal
                spans = redact
        spans.sort(key=lambda item: (item[0], -item[1]))
        parts: list[str] = []
        copied = 0
        for start, end, kind, _, value in spans:
            if end <= copied:
                continue  # inside a span already replaced (the same finding seen in two views)
            if start < copied:  # overlaps the previous replacement: one marker covers both
                parts.pop()
            else:
                parts.append(text[copied:start])
            parts.append(self._marker(kind, value))
            copied = end
        parts.append(text[copied:])
        return "".join(parts), cacheable

    def _keep(self, finding: _Finding, key: str | None, signal: str | None) -> bool:
        callback = self._callback
        assert callback is not None
        decision: Any = REDACT
        with guard("scrub_callback"):  # raising counts as an internal error: the value is redacted
            decision = callback(ScrubMatch(finding[2], finding[3], finding[4], key, signal))
            if decision not in (KEEP, REDACT):
                raise TypeError(f"scrub callback must return 'keep' or 'redact', not {decision!r}")
        return bool(decision == KEEP)

    def _marker(self, kind: str, value: str) -> str:
        if self._hmac is None:
            return f"[REDACTED:{kind}]" if kind else "[REDACTED]"
        if kind == "email":
            value = value.lower()
        elif kind in ("phone", "card"):
            value = sp.digits(value)
        elif kind == "iban":
            value = value.replace(" ", "").upper()
        digest = self._hmac.copy()
        digest.update(value.encode("utf-8", "surrogatepass"))
        return f"[HASH:{digest.hexdigest()[:16]}]"

    # --- attributes ------------------------------------------------------------------------------
    def _key_state(self, key: str) -> int:
        state = self._key_cache.get(key)
        if state is None:
            norm = _norm_key(key)
            if norm in self._deny_exact or norm.endswith(self._deny_suffix):
                state = _DENIED  # the deny-list wins over the allow-list: fail closed
            elif norm in self._allow_keys:
                state = _ALLOWED
            else:
                state = _NORMAL
            if len(self._key_cache) >= self._CACHE_MAX:
                self._key_cache.clear()
            self._key_cache[key] = state
        return state

    def key_denied(self, key: str) -> bool:
        """Whether `key` (case-insensitive, or its ``.``/``_``/``-`` suffix) is on the deny-list."""
        return self._key_state(key) == _DENIED

    def key_allowed(self, key: str) -> bool:
        """Whether `key` is allow-listed (exact, case-insensitive) and not deny-listed."""
        return self._key_state(key) == _ALLOWED

    def _deny(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple(self._marker("", str(item)) for item in value)
        return self._marker("", str(value))

    def scrub_value(self, key: str, value: AttributeValue, *, signal: str | None = None) -> AttributeValue:
        """Deny-listed key: the whole value replaced; allow-listed key: kept as is; otherwise
        strings (also inside sequences and maps) scrubbed; numbers, bools and bytes untouched."""
        state = self._key_state(key)
        if state == _DENIED:
            return self._deny(value)  # type: ignore[no-any-return]
        if state == _ALLOWED:
            return value
        if isinstance(value, str):
            return self.scrub_text(value, key=key, signal=signal)
        if isinstance(value, (list, tuple, Mapping)):  # sequences; maps (extended attributes)
            return self.scrub_body(value, key=key, signal=signal)  # type: ignore[no-any-return]
        return value

    def scrub_attributes(self, attributes: Mapping[str, AttributeValue] | None, *,
                         signal: str | None = None) -> Mapping[str, AttributeValue] | None:
        """Scrubbed attributes; the same mapping object when nothing changed."""
        if not attributes:
            return attributes
        # BoundedAttributes iterates in Python; its inner dict iterates in C (hot path).
        source: Mapping[str, AttributeValue] = attributes_dict(attributes)
        key_cache = self._key_cache
        clean = self._clean
        result: dict[str, AttributeValue] | None = None
        for key, value in source.items():
            state = key_cache.get(key)
            if state is None:
                state = self._key_state(key)
            if state == _DENIED:
                new: AttributeValue = self._deny(value)
            elif state == _ALLOWED:
                continue
            elif value.__class__ is str:
                new = value if value in clean else self.scrub_text(value, key=key, signal=signal)
            elif isinstance(value, (list, tuple, Mapping)):
                new = self.scrub_body(value, key=key, signal=signal)
            else:
                new = value
            if new is not value:
                if result is None:
                    result = dict(source)
                result[key] = new
        return attributes if result is None else result

    def scrub_body(self, body: Any, depth: int = 0, *, key: str | None = None,
                   signal: str | None = None) -> Any:
        """A log body: strings, and dicts/lists of them up to 8 levels (deeper: replaced). In a
        dict, deny-listed keys lose their value and allow-listed ones keep it."""
        if isinstance(body, str):
            return self.scrub_text(body, key=key, signal=signal)
        if isinstance(body, (Mapping, list, tuple)) and depth >= 8:
            return "[REDACTED:too-deep]"
        if isinstance(body, Mapping):
            changed: dict[Any, Any] | None = None
            for field, value in body.items():
                state = self._key_state(field) if isinstance(field, str) else _NORMAL
                if state == _ALLOWED:
                    continue
                new = (self._deny(value) if state == _DENIED else
                       self.scrub_body(value, depth + 1, key=field if isinstance(field, str) else key,
                                       signal=signal))
                if new is not value:
                    if changed is None:
                        changed = dict(body)
                    changed[field] = new
            return body if changed is None else changed
        if isinstance(body, (list, tuple)):
            items = [self.scrub_body(item, depth + 1, key=key, signal=signal) for item in body]
            if all(new is old for new, old in zip(items, body, strict=True)):
                return body
            return tuple(items) if isinstance(body, tuple) else items
        return body


def _norm_key(key: str) -> str:
    return key.strip().lower().replace("-", "_")
