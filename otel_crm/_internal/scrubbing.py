"""Scrub secrets and personal data from telemetry before it leaves the process.

Built in: emails; credentials (``Bearer``/``Basic``/``Authorization:`` values, ``sk-``/``sk-ant-``/
``sk-proj-``, Stripe, AWS ``AKIA``/``ASIA``, Google ``AIza``, GitHub, Slack ``xox?-``, JWTs, the password
of ``scheme://user:pw@host``, the value of ``api_key=``/``token=``/``password=``/``secret=``/``pwd=``…
and of ``"password": …`` in JSON); cards (13-19 digits, plain or 4-4-4-4/4-6-5/4-6-4, first digit 2-6,
Luhn-checked); phones (``+`` international, ``(415) 555-2671``/``415-555-2671``, trunk-0 national
``020 7946 0958``). Plain integers, timestamps, UUIDs and trace ids are left alone. Deny-listed keys
(``password``, ``token``, ``cookie``… also as a ``.``/``_``/``-`` suffix; OTEL_CRM_SCRUB_KEYS) lose
their whole value. Resource attributes are not scrubbed (configuration, not data).

Markers: redact writes ``[REDACTED:<kind>]`` (email, phone, card, secret, custom) in place of the
finding, keeping context (``token=[REDACTED:secret]``); a deny-listed value becomes ``[REDACTED]``.
Hash writes ``[HASH:<16 hex of HMAC-SHA256(salt, normalised value)>]`` (emails lower-cased, phones
and cards digits only) so equal values join; with no OTEL_CRM_SCRUB_SALT the salt is random per
process. Markers never match again: scrubbing twice changes nothing.

Cost: substring checks pick the pattern families that can match; those run as one regex. Built-in
patterns are linear (no nested or ambiguous quantifiers; one-char lookbehind boundaries). Strings
over ``max_scan_chars`` are scanned in windows overlapping by ``min(1024, max_scan_chars // 4)``,
nothing truncated; a match touching a window's end is rescanned from its start. A secret longer than
the overlap that is only recognisable across a boundary can be missed. Custom patterns
(OTEL_CRM_SCRUB_PATTERNS) run on every string after the built-ins; their cost is their author's.
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

from otel_crm._internal.sdk_compat import attributes_dict
from otel_crm._internal.settings import Settings

__all__ = ["DENIED_KEYS", "Scrubber"]

_log = logging.getLogger("otel_crm")

DENIED_KEYS: tuple[str, ...] = (
    "password", "passwd", "pwd", "secret", "authorization", "cookie", "set_cookie", "api_key", "apikey",
    "token", "access_token", "refresh_token", "client_secret", "private_key")

# Families, each behind a cheap gate on the whole string.
_AT, _KV, _TOK, _DIG = 1, 2, 4, 8
_TOKEN_HINTS = ("sk-", "sk_", "rk_", "AKIA", "ASIA", "AIza", "gh", "xox", "eyJ", "earer", "EARER",
                "Basic", "uthorization", "UTHORIZATION")
_DIGIT_GATE = re.compile(r"[0-9][0-9 ().-]{6,40}[0-9]")
_NB = r"[A-Za-z0-9_.+-]"  # chars that may not precede a number we flag
_KV_KEYS = ("api_key", "api-key", "apikey", "token", "password", "passwd", "pwd", "secret",
            "private_key", "passphrase")
_SCHEMES = r"(?i:bearer|basic|digest|token|negotiate|bot|apikey)"
_JSON_KEYS = r"password|passwd|pwd|secret|token|api[_-]?key|apikey|private[_-]?key|cookie|passphrase"

# name -> (gate, kind, value group or None, validator or None, pattern)
_SPECS: dict[str, tuple[int, str, str | None, str | None, str]] = {
    "authz": (_TOK, "secret", "authz_v",
              None, r"[Aa](?i:uthorization)[\"']?[ \t]{0,3}[:=][ \t]{0,3}[\"']?"
                    rf"(?:{_SCHEMES}[ \t]{{1,4}})?(?!{_SCHEMES}[ \t])"
                    r"(?P<authz_v>[^\s\"',;\[][^\s\"',;]{3,})"),
    "bearer": (_TOK, "secret", "bearer_v",
               None, r"[Bb](?<![A-Za-z0-9_][Bb])(?:earer|EARER)[ \t]{1,4}"
                     r"(?P<bearer_v>[A-Za-z0-9._~+/-]{8,}=*)"),
    "basic": (_TOK, "secret", "basic_v",
              None, r"Basic[ \t]{1,4}(?=[A-Za-z0-9+/]{0,256}[0-9+/=])(?P<basic_v>[A-Za-z0-9+/]{8,}={0,2})"),
    "sk": (_TOK, "secret", None, None, r"s(?<![A-Za-z0-9_-]s)k-[A-Za-z0-9_-]{16,}"),
    "stripe": (_TOK, "secret", None, None, r"[sr](?<![A-Za-z0-9_-][sr])k_(?:live|test)_[A-Za-z0-9]{10,}"),
    "aws": (_TOK, "secret", None, None, r"A(?<![A-Za-z0-9]A)(?:KIA|SIA)[0-9A-Z]{16}(?![A-Za-z0-9])"),
    "google": (_TOK, "secret", None, None, r"A(?<![A-Za-z0-9_-]A)Iza[0-9A-Za-z_-]{35}"),
    "github": (_TOK, "secret", None, None,
               r"g(?<![A-Za-z0-9_]g)(?:h[pousr]_[A-Za-z0-9]{30,}|ithub_pat_[A-Za-z0-9_]{30,})"),
    "slack": (_TOK, "secret", None, None, r"x(?<![A-Za-z0-9_-]x)ox[abposre]-[A-Za-z0-9-]{10,}"),
    "jwt": (_TOK, "secret", None, None,
            r"e(?<![A-Za-z0-9_-]e)yJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    "query": (_KV, "secret", "query_v",
              None, "=(?<=[yYnNdDtTeE]=)(?:" + "|".join(f"(?<=(?i:{key})=)" for key in _KV_KEYS) + ")"
                    r"(?P<query_v>[^\s&#;\"',<>\[\]][^\s&#;\"',<>]*)"),
    "json": (_KV, "secret", "json_v",
             None, r"[\"'](?:[A-Za-z0-9_.-]{0,40}[_.-])?(?i:" + _JSON_KEYS + r")[\"'][ \t]{0,3}:[ \t]{0,3}"
                   r"[\"']?(?P<json_v>[^\s\"'\\,{}\[\]][^\"'\\,{}\[\]\r\n]*)"),
    "userinfo": (_AT, "secret", "userinfo_v",
                 None, r"://[^\s:/?#@\[\]]{1,128}:(?P<userinfo_v>[^\s/?#@\[][^\s/?#@]{0,255})@"),
    "email": (_AT, "email", None, None,
              r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}"
              r"\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"),
    "card": (_DIG, "card", None, "card",
             rf"[2-6](?<!{_NB}[2-6])(?:[0-9]{{12,18}}|[0-9]{{3}}(?P<cs>[ -])"
             r"(?:[0-9]{4}(?P=cs)[0-9]{4}(?P=cs)[0-9]{4}|[0-9]{6}(?P=cs)[0-9]{4,5}))"
             r"(?![A-Za-z0-9_-]|\.[0-9])"),
    "intl": (_DIG, "phone", None, "intl",
             r"\+(?<![A-Za-z0-9_+]\+)[1-9][0-9 ().-]{6,20}[0-9](?![A-Za-z0-9]|[-.][0-9])"),
    "nanp": (_DIG, "phone", None, None,
             rf"(?:\((?<![A-Za-z0-9_]\()[2-9][0-9]{{2}}\) ?|[2-9](?<!{_NB}[2-9])[0-9]{{2}}[-. ])"
             r"[0-9]{3}[-. ][0-9]{4}(?![A-Za-z0-9]|[-.][0-9])"),
    "trunk": (_DIG, "phone", None, "trunk",
              rf"0(?<!{_NB}0)[1-9][0-9]{{0,3}}(?P<ts>[ -])[0-9]{{2,8}}(?:(?P=ts)[0-9]{{2,8}}){{0,3}}"
              r"(?![A-Za-z0-9]|[-.][0-9])"),
}

_shared: dict[str, Any] = {}  # the random per-process salt
_salt_lock = threading.Lock()


def _random_salt() -> bytes:
    with _salt_lock:
        if "salt" not in _shared:
            _shared["salt"] = os.urandom(32)
            _log.info("otel_crm: OTEL_CRM_SCRUB_SALT is empty; hashing with a random per-process salt, "
                      "so hashed values join only within this process")
        return _shared["salt"]  # type: ignore[no-any-return]


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        number = ord(char) - 48
        if index & 1:
            number = number * 2 - 9 if number > 4 else number * 2
        total += number
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(char for char in text if "0" <= char <= "9")


def _valid(check: str, text: str) -> bool:
    digits = _digits(text)
    if check == "card":
        return 13 <= len(digits) <= 19 and _luhn(digits)
    if check == "intl":
        return 8 <= len(digits) <= 15
    return 9 <= len(digits) <= 12  # trunk-0 national numbers


class Scrubber:
    """Finds secrets and personal data in strings and attribute values; thread-safe."""

    _CACHE_MAX = 4096
    _CACHE_LEN = 200

    def __init__(self, *, mode: str = "redact", salt: str = "", extra_patterns: Sequence[str] = (),
                 extra_keys: Sequence[str] = (), max_scan_chars: int = 8192) -> None:
        if mode not in ("redact", "hash"):
            raise ValueError(f"scrub mode must be redact or hash, not {mode!r}")
        self.mode = mode
        self._hmac: Any = None
        if mode == "hash":
            key = salt.encode("utf-8") if salt else _random_salt()
            self._hmac = hmac.new(key, digestmod=hashlib.sha256)
        self._custom: list[re.Pattern[str]] = []
        for pattern in extra_patterns:
            try:
                self._custom.append(re.compile(pattern))
            except (re.error, TypeError, ValueError) as exc:
                _log.warning("otel_crm: invalid regular expression in OTEL_CRM_SCRUB_PATTERNS: %r (%s); "
                             "skipped", pattern, exc)
        keys = DENIED_KEYS + tuple(_norm_key(k) for k in extra_keys if k.strip())
        self._deny_exact = frozenset(keys)
        self._deny_suffix = tuple(sep + key for key in keys for sep in (".", "_"))
        self._key_cache: dict[str, bool] = {}
        self._clean: set[str] = set()
        self._variants: dict[int, re.Pattern[str]] = {}
        self._max_scan = max(256, int(max_scan_chars))
        self._overlap = min(1024, self._max_scan // 4)

    @classmethod
    def from_settings(cls, settings: Settings) -> Scrubber | None:
        if settings.scrub_mode == "off":
            return None
        return cls(mode=settings.scrub_mode, salt=settings.scrub_salt,
                   extra_patterns=settings.scrub_patterns, extra_keys=settings.scrub_keys)

    # --- strings ---------------------------------------------------------------------------------
    def scrub_text(self, text: str) -> str:
        """`text` with every finding replaced; the same object when nothing matched."""
        if text in self._clean:
            return text
        mask = (_AT if "@" in text else 0) | (
            _KV if ("=" in text or '":' in text or "':" in text) else 0)
        for hint in _TOKEN_HINTS:
            if hint in text:
                mask |= _TOK
                break
        if _DIGIT_GATE.search(text) is not None:
            mask |= _DIG
        result = text
        if mask:
            regex = self._variants.get(mask) or self._variant(mask)
            result = self._sub(regex, result, self._replace)
        for custom in self._custom:
            result = self._sub(custom, result, self._replace_custom)
        if result == text:
            if len(text) <= self._CACHE_LEN:
                if len(self._clean) >= self._CACHE_MAX:
                    self._clean.clear()
                self._clean.add(text)
            return text
        return result

    def _variant(self, mask: int) -> re.Pattern[str]:
        branches = [f"(?P<{name}>{spec[4]})" for name, spec in _SPECS.items() if spec[0] & mask]
        regex = re.compile("|".join(branches), re.ASCII)
        self._variants[mask] = regex
        return regex

    def _sub(self, regex: re.Pattern[str], text: str, replace: Callable[[re.Match[str]], str]) -> str:
        size = len(text)
        if size <= self._max_scan:
            return regex.sub(replace, text)
        parts: list[str] = []
        copied = pos = 0
        while pos < size:
            end = min(pos + self._max_scan, size)
            final = end == size
            accept_before = end if final else end - self._overlap
            next_pos = accept_before
            for match in regex.finditer(text, pos, end):
                start = match.start()
                if start >= accept_before:
                    break
                if not final and match.end() == end and start > pos:
                    next_pos = start  # may continue past the window: rescan it from its start
                    break
                parts.append(text[copied:start])
                parts.append(replace(match))
                copied = match.end()
                next_pos = max(accept_before, copied)
            pos = next_pos
        parts.append(text[copied:])
        return "".join(parts)

    def _replace(self, match: re.Match[str]) -> str:
        name = match.lastgroup or ""
        spec = _SPECS[name]
        found = match.group(0)
        if spec[3] is not None and not _valid(spec[3], found):
            return found
        group = spec[2]
        if group is None:
            return self._marker(spec[1], found)
        offset = match.start()
        start, end = match.span(group)
        return (found[:start - offset] + self._marker(spec[1], match.group(group))
                + found[end - offset:])

    def _replace_custom(self, match: re.Match[str]) -> str:
        found = match.group(0)
        return self._marker("custom", found) if found else found

    def _marker(self, kind: str, value: str) -> str:
        if self._hmac is None:
            return f"[REDACTED:{kind}]" if kind else "[REDACTED]"
        if kind == "email":
            value = value.lower()
        elif kind in ("phone", "card"):
            value = _digits(value)
        digest = self._hmac.copy()
        digest.update(value.encode("utf-8", "surrogatepass"))
        return f"[HASH:{digest.hexdigest()[:16]}]"

    # --- attributes ------------------------------------------------------------------------------
    def key_denied(self, key: str) -> bool:
        """Whether `key` (case-insensitive, or its ``.``/``_``/``-`` suffix) is on the deny-list."""
        denied = self._key_cache.get(key)
        if denied is None:
            norm = _norm_key(key)
            denied = norm in self._deny_exact or norm.endswith(self._deny_suffix)
            if len(self._key_cache) >= self._CACHE_MAX:
                self._key_cache.clear()
            self._key_cache[key] = denied
        return denied

    def _deny(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple(self._marker("", str(item)) for item in value)
        return self._marker("", str(value))

    def scrub_value(self, key: str, value: AttributeValue) -> AttributeValue:
        """Deny-listed key: the whole value replaced; strings (also inside sequences and maps)
        scrubbed; numbers, bools and bytes untouched."""
        if self.key_denied(key):
            return self._deny(value)  # type: ignore[no-any-return]
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, (list, tuple, Mapping)):  # sequences; maps (extended attributes)
            return self.scrub_body(value)  # type: ignore[no-any-return]
        return value

    def scrub_attributes(self, attributes: Mapping[str, AttributeValue] | None
                         ) -> Mapping[str, AttributeValue] | None:
        """Scrubbed attributes; the same mapping object when nothing changed."""
        if not attributes:
            return attributes
        # BoundedAttributes iterates in Python; its inner dict iterates in C (hot path).
        source: Mapping[str, AttributeValue] = attributes_dict(attributes)
        key_cache = self._key_cache
        clean = self._clean
        result: dict[str, AttributeValue] | None = None
        for key, value in source.items():
            denied = key_cache.get(key)
            if denied is None:
                denied = self.key_denied(key)
            if denied:
                new: AttributeValue = self._deny(value)
            elif value.__class__ is str:
                new = value if value in clean else self.scrub_text(value)
            elif isinstance(value, (list, tuple, Mapping)):
                new = self.scrub_body(value)
            else:
                new = value
            if new is not value:
                if result is None:
                    result = dict(source)
                result[key] = new
        return attributes if result is None else result

    def scrub_body(self, body: Any, depth: int = 0) -> Any:
        """A log body: strings, and dicts/lists of them up to 8 levels (deeper: replaced)."""
        if isinstance(body, str):
            return self.scrub_text(body)
        if isinstance(body, (Mapping, list, tuple)) and depth >= 8:
            return "[REDACTED:too-deep]"
        if isinstance(body, Mapping):
            changed: dict[Any, Any] | None = None
            for key, value in body.items():
                new = (self._deny(value) if isinstance(key, str) and self.key_denied(key)
                       else self.scrub_body(value, depth + 1))
                if new is not value:
                    if changed is None:
                        changed = dict(body)
                    changed[key] = new
            return body if changed is None else changed
        if isinstance(body, (list, tuple)):
            items = [self.scrub_body(item, depth + 1) for item in body]
            if all(new is old for new, old in zip(items, body, strict=True)):
                return body
            return tuple(items) if isinstance(body, tuple) else items
        return body


def _norm_key(key: str) -> str:
    return key.strip().lower().replace("-", "_")
