"""What the scrubber looks for: the built-in patterns, their cheap gates and their validators.

Each family (``@``, ``key=value``, token, digits) sits behind a gate on the whole string (a
substring check or one tiny regex) so a clean string pays a few ``in`` checks. The patterns of the
families a string may hold run as one alternation (see ``Scrubber``). Every pattern is linear: no
nested or ambiguous quantifiers, one-char lookbehind boundaries, bounded or possessive repeats
where a failed attempt could otherwise rescan (tested with 1 MB adversarial inputs per family).

Validators turn shapes into findings: Luhn for cards, ISO 7064 mod 97 and the per-country length
for IBANs, the SSA rules for US social security numbers, digit counts for phones.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from otel_crm._internal.settings import SettingProblem, SettingsError

__all__ = ["AT", "DENIED_KEYS", "DIG", "DIGIT_GATE", "IBAN", "IBAN_GATE", "KEEP", "KV", "PEM", "PERCENT_FAMILIES",
           "PERCENT_ONLY", "PERCENT_SPECS", "REDACT", "SPECS", "SSN", "SSN_GATE", "TOK", "TOKEN_HINTS",
           "ScrubCallback", "ScrubMatch", "compile_patterns", "digits", "families", "luhn", "matches", "outside",
           "valid", "valid_length"]

_log = logging.getLogger("otel_crm")

KEEP = "keep"
REDACT = "redact"


@dataclass(frozen=True)
class ScrubMatch:
    """One finding, as a scrub callback sees it."""

    kind: str  # the marker kind: email, phone, card, iban, ssn, secret, custom
    rule: str  # the pattern that found it: email, card, jwt, userinfo, bearer, query, custom…
    text: str  # what would be replaced, percent-decoded
    key: str | None = None  # the attribute key or record field holding it, when there is one
    signal: str | None = None  # traces, logs, metrics, stdout… when the caller says


ScrubCallback = Callable[[ScrubMatch], str]

DENIED_KEYS: tuple[str, ...] = (
    "password", "passwd", "pwd", "secret", "authorization", "cookie", "set_cookie", "api_key", "apikey",
    "token", "access_token", "refresh_token", "client_secret", "private_key", "secret_key", "access_key")

# Families, each behind a cheap gate on the whole string (see `families`). IBANs and SSNs have
# their own gates behind the digit one, so a timestamp does not pay for their patterns.
AT, KV, TOK, DIG, PEM, IBAN, SSN = 1, 2, 4, 8, 16, 32, 64
TOKEN_HINTS = ("sk-", "sk_", "rk_", "AKIA", "ASIA", "AIza", "gh", "xox", "eyJ", "earer", "EARER",
               "Basic", "uthorization", "UTHORIZATION")
DIGIT_GATE = re.compile(r"[0-9][0-9 ().-]{6,40}[0-9]")
IBAN_GATE = re.compile(r"[A-Za-z]{2}[0-9]{2}")
# The patterns whose match can contain a percent-escape (their character classes admit "%"):
# only they can find, in an encoded string, something its decoded view does not show.
PERCENT_SPECS = frozenset({"authz", "query", "json", "userinfo", "email"})
PERCENT_FAMILIES = AT | KV | TOK
PERCENT_ONLY = 1 << 10  # variant key flag: PERCENT_SPECS only
SSN_GATE = re.compile(r"[0-9]{3}[ -][0-9]{2}[ -][0-9]{4}")
_NB = r"[A-Za-z0-9_.+-]"  # chars that may not precede a number we flag
_KV_KEYS = ("api_key", "api-key", "apikey", "token", "password", "passwd", "pwd", "secret",
            "private_key", "passphrase", "access_key", "secret_key", "credential", "credentials")
_SCHEMES = r"(?i:bearer|basic|digest|token|negotiate|bot|apikey)"
_JSON_KEYS = (r"password|passwd|pwd|secret|token|api[_-]?key|apikey|private[_-]?key|cookie|passphrase"
              r"|access[_-]?key|secret[_-]?key|credentials?")
_B64URL = r"[A-Za-z0-9_-]"

# IBAN length per country (SWIFT IBAN registry). A country missing here is not detected.
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def _iban_pattern() -> str:
    # One branch per length, so a match is exactly one IBAN long (never swallows what follows).
    by_length: dict[int, list[str]] = {}
    for country, length in _IBAN_LENGTHS.items():
        by_length.setdefault(length - 4, []).append(country)
    branches = [f"(?i:{'|'.join(sorted(codes))})[0-9]{{2}}(?:[ ]?[A-Za-z0-9]){{{length}}}"
                for length, codes in sorted(by_length.items())]
    return r"(?<![A-Za-z0-9])(?=[A-Za-z]{2}[0-9]{2})(?:" + "|".join(branches) + r")(?![A-Za-z0-9])"


# name -> (gate, kind, value groups (the first that took part; none: the whole match), validator
# or None, pattern). Order matters where two
# patterns can match at the same place: the first wins (SSN before the trunk-0 phone shape).
SPECS: dict[str, tuple[int, str, tuple[str, ...], str | None, str]] = {
    "authz": (TOK, "secret", ("authz_v",),
              None, r"[Aa](?i:uthorization)[\"']?[ \t]{0,3}[:=][ \t]{0,3}[\"']?"
                    rf"(?:{_SCHEMES}[ \t]{{1,4}})?(?!{_SCHEMES}[ \t])"
                    r"(?P<authz_v>[^\s\"',;\[][^\s\"',;]{3,})"),
    "bearer": (TOK, "secret", ("bearer_v",),
               None, r"[Bb](?<![A-Za-z0-9_][Bb])(?:earer|EARER)[ \t]{1,4}"
                     r"(?P<bearer_v>[A-Za-z0-9._~+/-]{8,}=*)"),
    "basic": (TOK, "secret", ("basic_v",),
              None, r"Basic[ \t]{1,4}(?=[A-Za-z0-9+/]{0,256}[0-9+/=])(?P<basic_v>[A-Za-z0-9+/]{8,}={0,2})"),
    # A private key block; without its END line (truncated) everything up to the end of the
    # base64 body goes. The body stops at the next "-----", so a failed attempt never rescans.
    "pem": (PEM, "secret", (), None,
            r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[A-Za-z0-9+/=\s\\:,._]|-(?!----))*+"
            r"(?:-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----)?"),
    "sk": (TOK, "secret", (), None, r"s(?<![A-Za-z0-9_-]s)k-[A-Za-z0-9_-]{16,}"),
    "stripe": (TOK, "secret", (), None, r"[sr](?<![A-Za-z0-9_-][sr])k_(?:live|test)_[A-Za-z0-9]{10,}"),
    "aws": (TOK, "secret", (), None, r"A(?<![A-Za-z0-9]A)(?:KIA|SIA)[0-9A-Z]{16}(?![A-Za-z0-9])"),
    "google": (TOK, "secret", (), None, r"A(?<![A-Za-z0-9_-]A)Iza[0-9A-Za-z_-]{35}"),
    "github": (TOK, "secret", (), None,
               r"g(?<![A-Za-z0-9_]g)(?:h[pousr]_[A-Za-z0-9]{30,}|ithub_pat_[A-Za-z0-9_]{30,})"),
    "slack": (TOK, "secret", (), None, r"x(?<![A-Za-z0-9_-]x)ox[abposre]-[A-Za-z0-9-]{10,}"),
    # JWS (3 segments) and JWE (5) wherever they appear; only letters and digits may precede.
    "jwt": (TOK, "secret", (), None,
            rf"e(?<![A-Za-z0-9]e)yJ{_B64URL}{{4,}}\.{_B64URL}{{4,}}\.{_B64URL}*(?:\.{_B64URL}+){{0,2}}"),
    "query": (KV, "secret", ("query_v",),
              None, "=(?<=[yYnNdDtTeElLsS]=)(?:" + "|".join(f"(?<=(?i:{key})=)" for key in _KV_KEYS) + ")"
                    r"(?P<query_v>[^\s&#;\"',<>\[\]][^\s&#;\"',<>]*)"),
    "json": (KV, "secret", ("json_v",),
             None, r"[\"'](?:[A-Za-z0-9_.-]{0,40}[_.-])?(?i:" + _JSON_KEYS + r")[\"'][ \t]{0,3}:[ \t]{0,3}"
                   r"[\"']?(?P<json_v>[^\s\"'\\,{}\[\]][^\"'\\,{}\[\]\r\n]*)"),
    # scheme://user:password@host for any scheme (the user may be empty: redis://:pw@host); the
    # password runs to the last "@" before the host, as URL parsers read it. Or scheme://token@host
    # when the user part looks like a credential (a capital, a digit or another symbol, or 20+
    # chars): plain lowercase names (git, postgres) stay and are not consumed, so
    # https://jane@example.com is still seen as an email. One branch: they share the "://" prefix.
    "userinfo": (AT, "secret", ("userinfo_v", "userinfo_u"),
                 None, r"://(?:[^\s:/?#@\[\]]{0,128}:(?P<userinfo_v>[^\s/?#@\[][^\s/?#]{0,255})@"
                       r"|(?=[^\s:/?#@\[\]]{0,127}[^a-z._\s:/?#@\[\]-]|[^\s:/?#@\[\]]{20})"
                       r"(?P<userinfo_u>[^\s:/?#@\[\]]{1,128})@)"),
    "email": (AT, "email", (), None,
              r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}"
              r"\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"),
    "iban": (IBAN, "iban", (), "iban", _iban_pattern()),
    "ssn": (SSN, "ssn", (), "ssn",
            rf"[0-9](?<!{_NB}[0-9])[0-9]{{2}}(?P<ss>[ -])[0-9]{{2}}(?P=ss)[0-9]{{4}}"
            r"(?![A-Za-z0-9]|[-.][0-9])"),
    "card": (DIG, "card", (), "card",
             rf"[2-6](?<!{_NB}[2-6])(?:[0-9]{{12,18}}|[0-9]{{3}}(?P<cs>[ .-])"
             r"(?:[0-9]{4}(?P=cs)[0-9]{4}(?P=cs)[0-9]{4}|[0-9]{6}(?P=cs)[0-9]{4,5}))"
             r"(?![A-Za-z0-9_-]|\.[0-9])"),
    "intl": (DIG, "phone", (), "intl",
             r"\+(?<![A-Za-z0-9_+]\+)[1-9][0-9 ().-]{6,20}[0-9](?![A-Za-z0-9]|[-.][0-9])"),
    "nanp": (DIG, "phone", (), None,
             rf"(?:\((?<![A-Za-z0-9_]\()[2-9][0-9]{{2}}\) ?|[2-9](?<!{_NB}[2-9])[0-9]{{2}}[-. ])"
             r"[0-9]{3}[-. ][0-9]{4}(?![A-Za-z0-9]|[-.][0-9])"),
    "trunk": (DIG, "phone", (), "trunk",
              rf"0(?<!{_NB}0)[1-9][0-9]{{0,3}}(?P<ts>[ -])[0-9]{{2,8}}(?:(?P=ts)[0-9]{{2,8}}){{0,3}}"
              r"(?![A-Za-z0-9]|[-.][0-9])"),
}


def families(text: str) -> int:
    """The pattern families `text` may hold (a bit mask; 0: nothing to scan for)."""
    mask = (AT if "@" in text else 0) | (KV if ("=" in text or '":' in text or "':" in text) else 0)
    for hint in TOKEN_HINTS:
        if hint in text:
            mask |= TOK
            break
    if DIGIT_GATE.search(text) is not None:
        mask |= DIG
        if IBAN_GATE.search(text) is not None:
            mask |= IBAN
        if SSN_GATE.search(text) is not None:
            mask |= SSN
    if "PRIVATE KEY" in text:
        mask |= PEM
    return mask


def luhn(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        value = ord(char) - 48
        if index & 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


_NOT_DIGIT = re.compile(r"[^0-9]+")


def digits(text: str) -> str:
    return _NOT_DIGIT.sub("", text)


def _iban_ok(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _ssn_ok(text: str) -> bool:
    number = digits(text)
    area, group, serial = number[:3], number[3:5], number[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def valid(check: str, text: str) -> bool:
    """Whether `text`, matched by a pattern with validator `check`, is a real finding."""
    if check == "card":
        number = digits(text)
        return 13 <= len(number) <= 19 and luhn(number)
    if check == "intl":
        return 8 <= len(digits(text)) <= 15
    if check == "trunk":
        return 9 <= len(digits(text)) <= 12  # trunk-0 national numbers
    if check == "iban":
        return _iban_ok(text)
    if check == "ssn":
        return _ssn_ok(text)
    raise ValueError(f"unknown validator {check!r}")


_PHONE_TAIL = re.compile(r"[ ().-]+[0-9]+\Z")


def valid_length(check: str, text: str) -> int:
    """How much of `text`, matched by a pattern with validator `check`, is a real finding: all of
    it, none (0), or — for phones, whose groups a greedy pattern may run into a following number
    (``020 7946 0958 404``, a phone then a status code) — the longest valid prefix that ends at a
    group boundary."""
    if valid(check, text):
        return len(text)
    if check in ("intl", "trunk"):
        while (tail := _PHONE_TAIL.search(text)) is not None:  # a match is at most ~40 chars
            text = text[:tail.start()]
            if valid(check, text):
                return len(text)
    return 0


def compile_patterns(patterns: Sequence[str], variable: str, name: str, strict: bool) -> list[re.Pattern[str]]:
    """User patterns compiled; an invalid one is one log line naming the setting and skipped, or,
    with `strict`, a SettingsError."""
    compiled: list[re.Pattern[str]] = []
    problems: list[SettingProblem] = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError, ValueError) as exc:
            problems.append(SettingProblem(variable, str(pattern), "a valid regular expression", ()))
            if not strict:
                _log.warning("otel_crm: invalid regular expression in %s (%s): %r (%s); skipped",
                             variable, name, pattern, exc)
    if problems and strict:
        raise SettingsError(problems)
    return compiled


def matches(regex: re.Pattern[str], text: str, window: int, overlap: int) -> Iterator[re.Match[str]]:
    """Every match of `regex` in `text`; a string longer than `window` is scanned in windows
    overlapping by `overlap`, nothing truncated. A match touching a window's end is rescanned from
    its start in the next window; a secret longer than the overlap that is only recognisable across
    a boundary can be missed."""
    size = len(text)
    if size <= window:
        yield from regex.finditer(text)
        return
    pos = 0
    while pos < size:
        end = min(pos + window, size)
        final = end == size
        accept_before = end if final else end - overlap
        next_pos = accept_before
        for match in regex.finditer(text, pos, end):
            start = match.start()
            if start >= accept_before:
                break
            if not final and match.end() == end and start > pos:
                next_pos = start  # may continue past the window: rescan it from its start
                break
            yield match
            next_pos = max(accept_before, match.end())
        pos = next_pos


_T = TypeVar("_T", bound=tuple[Any, ...])


def outside(items: list[_T], regions: list[tuple[int, int]]) -> list[_T]:
    """The `items` (tuples starting with start, end) not inside any one of `regions`; in
    O((items + regions) log regions)."""
    regions = sorted(regions)
    starts = [start for start, _ in regions]
    reach = list(itertools.accumulate((end for _, end in regions), max))  # furthest end so far
    kept: list[_T] = []
    for item in items:  # inside one region <=> a region starting before it reaches past its end
        index = bisect.bisect_right(starts, item[0]) - 1
        if index < 0 or reach[index] < item[1]:
            kept.append(item)
    return kept
