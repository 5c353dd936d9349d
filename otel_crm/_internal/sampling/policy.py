"""What a sampling decision is made of: the facts of a trace, the rules, the policy that decides.

The policy is pure (no clock, no lock, no SDK object): the tail sampler fills a :class:`TraceFacts`
when a trace's local part is complete (or forced early) and the head sampler fills one at the entry
span's start; both ask the same :class:`SamplingPolicy`, so head and tail modes apply one set of rules.

Rules (``OTEL_CRM_SAMPLING_RULES``)
    An ordered list; the first rule whose fields all match the trace's entry span wins. Fields:
    ``route`` (glob on ``http.route``), ``method`` (``http.request.method``, any case), ``tenant``
    (glob on ``crm.tenant.id``), ``operation`` (glob on the entry span's name), ``service``
    (``service.name``). A glob has two wildcards, ``*`` (any text) and ``?`` (one character);
    everything else is literal. The rule gives ``ratio`` (0..1) and may say ``errors: false`` /
    ``slow: false`` to stop keeping its errors / slow traces. No match: the default ratio, errors and
    slow traces kept.

Ratio decisions are the SDK's ``TraceIdRatioBased`` rule (low 64 bits of the trace id under
``round(ratio * 2**64)``), so every service — and a head sampler — agrees on an ok trace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

__all__ = [
    "MATCH_FIELDS",
    "MAX_RULES",
    "SAMPLING_MODES",
    "Decision",
    "RuleProblem",
    "SamplingMode",
    "SamplingPolicy",
    "SamplingReason",
    "SamplingRule",
    "TraceFacts",
    "compile_rules",
    "glob_match",
    "glob_regex",
]

SamplingMode = Literal["tail", "collector", "head", "off"]
SAMPLING_MODES: tuple[SamplingMode, ...] = get_args(SamplingMode)
SamplingReason = Literal["error", "slow", "ratio", "all", "dropped"]
MatchField = Literal["route", "method", "tenant", "operation", "service"]
MATCH_FIELDS: tuple[MatchField, ...] = get_args(MatchField)
_GLOBS = frozenset({"route", "tenant", "operation"})
MAX_RULES = 100  # a bound like every other: rules are matched per trace
_RULE_KEYS = frozenset({"name", "ratio", "errors", "slow", *MATCH_FIELDS})
_TRACE_ID_LIMIT = (1 << 64) - 1  # the low 64 bits, as in opentelemetry.sdk.trace.sampling
_CACHE_LIMIT = 2048  # distinct values remembered per field (then the cache starts over)


class TraceFacts(NamedTuple):
    """What the policy knows about a trace's local part (the entry span's fields when known).

    Immutable and without a ``__dict__``; a NamedTuple rather than a frozen dataclass because one is
    made per decided trace and it is built twice as fast."""

    has_error: bool = False
    root_duration_s: float | None = None  # the longest local root that ended; None while none has
    route: str | None = None
    method: str | None = None
    tenant: str | None = None
    operation: str | None = None
    service: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome for one trace: kept or not, why, how many traces a kept one stands for, which rule."""

    keep: bool
    reason: SamplingReason
    weight: float  # 1/ratio for a ratio keep, 1 otherwise (0 when dropped)
    rule: str | None = None  # the rule that matched (None: no rule matched, or no rules)
    partial: bool = False  # kept after an early drop: only the spans that ended after it


@dataclass(frozen=True, slots=True)
class SamplingRule:
    """One validated rule (see the module doc)."""

    name: str
    ratio: float
    route: str | None = None
    method: str | None = None
    tenant: str | None = None
    operation: str | None = None
    service: str | None = None
    errors: bool = True
    slow: bool = True

    def fields(self) -> dict[MatchField, str]:
        """The fields this rule matches on (all must match)."""
        return {name: value for name in MATCH_FIELDS if (value := getattr(self, name)) is not None}


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """An invalid rule: which (``rule 2 "vip"``), its text, and what was expected."""

    label: str
    text: str
    reason: str


def _glob_body(pattern: str) -> str:
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char in "\\.+()|[]{}^$":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def glob_regex(pattern: str) -> str:
    """The glob as an anchored RE2 expression (Go, for the collector): ``(?s)`` so a wildcard matches a
    newline too, and RE2's ``$`` is the end of the text. Python matches the same with ``glob_match``."""
    return "(?s)^" + _glob_body(pattern) + "$"


def glob_match(pattern: str) -> Callable[[str], object]:
    """A test for one glob in Python (``fullmatch``: Python's ``$`` also matches before a final newline)."""
    return re.compile(_glob_body(pattern), re.DOTALL).fullmatch


def _label(index: int, raw: object) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    return f'rule {index} "{name}"' if isinstance(name, str) and name else f"rule {index}"


def _check_rule(index: int, raw: object, names: set[str]) -> SamplingRule | str:
    """A rule, or what was expected instead (the first problem found)."""
    if not isinstance(raw, Mapping):
        return "a JSON object"
    unknown = sorted(str(key) for key in raw if key not in _RULE_KEYS)
    if unknown:
        return f"only the fields {', '.join(sorted(_RULE_KEYS))} (unknown: {', '.join(unknown)})"
    ratio = raw.get("ratio")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
        return "a ratio from 0 to 1 (required)"
    values: dict[str, Any] = {}
    for name in MATCH_FIELDS:
        value = raw.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            return f"{name} as a non-empty string"
        values[name] = value.strip().upper() if name == "method" else value.strip()
    for flag in ("errors", "slow"):
        if not isinstance(raw.get(flag, True), bool):
            return f"{flag} as true or false"
    name = raw.get("name", f"rule{index}")
    if not isinstance(name, str) or not name.strip():
        return "name as a non-empty string"
    if name in names:
        return f"a name not used by an earlier rule ({name!r} is)"
    return SamplingRule(name=name.strip(), ratio=float(ratio), errors=raw.get("errors", True),
                        slow=raw.get("slow", True), **values)


def compile_rules(raw: Iterable[object]) -> tuple[tuple[SamplingRule, ...], list[RuleProblem]]:
    """Validate rules (JSON-decoded objects); an invalid one is left out and reported, the rest kept."""
    rules: list[SamplingRule] = []
    problems: list[RuleProblem] = []
    names: set[str] = set()
    for index, given in enumerate(raw, start=1):
        item: object = given
        if isinstance(given, SamplingRule):  # already a rule (configure(sampling_rules=[SamplingRule(...)]))
            converted: dict[str, object] = {"name": given.name, "ratio": given.ratio, "errors": given.errors,
                                            "slow": given.slow}
            converted.update((str(key), value) for key, value in given.fields().items())
            item = converted
        checked = (_check_rule(index, item, names) if index <= MAX_RULES
                   else f"at most {MAX_RULES} rules")
        if isinstance(checked, str):
            problems.append(RuleProblem(_label(index, item), _text(item), checked))
        else:
            names.add(checked.name)
            rules.append(checked)
    return tuple(rules), problems


def _text(item: object) -> str:
    try:
        return json.dumps(item, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(item)


class _Field:
    """Which rules one entry-span field lets through, as a bit mask per value (cached, bounded).

    A value not cached yet costs a few dict lookups, not one test per rule: exact values, ``prefix*``
    and ``*suffix`` globs are indexed (by the value's head or tail of each length used); only other
    globs (``?``, inner ``*``) are tried one by one.
    """

    __slots__ = ("_cache", "_exact", "_free", "_others", "_prefixes", "_suffixes", "name", "used")

    def __init__(self, name: MatchField, rules: tuple[SamplingRule, ...]) -> None:
        self.name = name
        self._free = 0  # rules that do not look at this field: always let through
        self._exact: dict[str, int] = {}
        self._prefixes: dict[int, dict[str, int]] = {}  # length -> prefix -> rules
        self._suffixes: dict[int, dict[str, int]] = {}
        self._others: list[tuple[int, Callable[[str], object]]] = []
        for index, rule in enumerate(rules):
            value, bit = getattr(rule, name), 1 << index
            if value is None:
                self._free |= bit
            elif name not in _GLOBS or not ("*" in value or "?" in value):
                self._exact[value] = self._exact.get(value, 0) | bit
            elif "?" in value or "*" in value.strip("*"):
                self._others.append((bit, glob_match(value)))
            elif not value.startswith("*"):
                _index(self._prefixes, value.rstrip("*"), bit)
            elif not value.endswith("*"):
                _index(self._suffixes, value.lstrip("*"), bit)
            else:  # "*text*", or stars only
                self._others.append((bit, _contains(value.strip("*"))))
        self.used = self._free != (1 << len(rules)) - 1  # some rule looks at this field
        self._cache: dict[str | None, int] = {}

    def mask(self, value: str | None) -> int:
        cached = self._cache.get(value)
        if cached is not None:
            return cached
        mask = self._free
        if value is not None:
            probe = value.upper() if self.name == "method" else value
            mask |= self._exact.get(probe, 0)
            for length, table in self._prefixes.items():
                mask |= table.get(probe[:length], 0)
            for length, table in self._suffixes.items():
                if len(probe) >= length:
                    mask |= table.get(probe[len(probe) - length:], 0)
            for bit, test in self._others:
                if test(probe):
                    mask |= bit
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[value] = mask
        return mask


def _contains(text: str) -> Callable[[str], object]:
    return lambda value: text in value


def _index(tables: dict[int, dict[str, int]], key: str, bit: int) -> None:
    table = tables.setdefault(len(key), {})
    table[key] = table.get(key, 0) | bit


@dataclass(frozen=True, slots=True)
class _Outcomes:
    """Precomputed decisions of one rule (or of the default): no allocation per trace."""

    bound: int
    errors: bool
    slow: bool
    error: Decision
    slow_kept: Decision
    ratio: Decision
    dropped: Decision
    partial_error: Decision
    partial_slow: Decision

    @classmethod
    def build(cls, ratio: float, errors: bool, slow: bool, rule: str | None) -> _Outcomes:
        # Same bound as TraceIdRatioBased.get_bound_for_rate: round(rate * 2**64).
        weight = 1.0 / ratio if ratio > 0 else 0.0
        return cls(round(ratio * (_TRACE_ID_LIMIT + 1)), errors, slow,
                   Decision(True, "error", 1.0, rule), Decision(True, "slow", 1.0, rule),
                   Decision(True, "ratio", weight, rule), Decision(False, "dropped", 0.0, rule),
                   Decision(True, "error", 1.0, rule, True), Decision(True, "slow", 1.0, rule, True))


_ALL = Decision(True, "all", 1.0)


@dataclass(frozen=True)
class SamplingPolicy:
    """Keep errors, slow traces and a trace-id ratio of the rest, per the first matching rule."""

    ratio: float = 0.1
    slow_seconds: float = 2.0
    keep_all: bool = False
    rules: tuple[SamplingRule, ...] = ()
    _default: _Outcomes = field(init=False, repr=False, compare=False)
    _by_rule: tuple[_Outcomes, ...] = field(init=False, repr=False, compare=False)
    _fields: tuple[_Field, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"sampling ratio must be within 0..1, got {self.ratio!r}")
        if self.slow_seconds < 0:
            raise ValueError(f"slow_seconds must be >= 0, got {self.slow_seconds!r}")
        rules, problems = compile_rules(self.rules)
        if problems:
            raise ValueError("; ".join(f"{p.label}: {p.reason}" for p in problems))
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "_default", _Outcomes.build(self.ratio, True, True, None))
        object.__setattr__(self, "_by_rule", tuple(_Outcomes.build(r.ratio, r.errors, r.slow, r.name)
                                                   for r in rules))
        fields = (_Field(name, rules) for name in MATCH_FIELDS)
        object.__setattr__(self, "_fields", tuple(f for f in fields if f.used))

    @property
    def uses_entry(self) -> bool:
        """Whether any rule looks at the entry span (if not, its fields need not be read)."""
        return bool(self.rules)

    @property
    def entry_fields(self) -> frozenset[str]:
        """The entry span's fields some rule matches on (the others need not be read)."""
        return frozenset(matcher.name for matcher in self._fields)

    def rule_for(self, facts: TraceFacts) -> SamplingRule | None:
        """The first rule matching the facts, or None."""
        index = self._match(facts)
        return None if index < 0 else self.rules[index]

    def _match(self, facts: TraceFacts) -> int:
        if not self.rules:
            return -1
        mask = -1
        for matcher in self._fields:
            mask &= matcher.mask(getattr(facts, matcher.name))
            if not mask:
                return -1
        return (mask & -mask).bit_length() - 1  # the lowest set bit: the first rule that matches

    def _outcomes(self, facts: TraceFacts) -> _Outcomes:
        index = self._match(facts)
        return self._default if index < 0 else self._by_rule[index]

    def decide(self, trace_id: int, facts: TraceFacts) -> Decision:
        if self.keep_all:
            return _ALL
        outcomes = self._outcomes(facts)
        if facts.has_error and outcomes.errors:
            return outcomes.error
        duration = facts.root_duration_s
        if duration is not None and duration >= self.slow_seconds and outcomes.slow:
            return outcomes.slow_kept
        if trace_id & _TRACE_ID_LIMIT < outcomes.bound:
            return outcomes.ratio
        return outcomes.dropped

    def decide_plain(self, trace_id: int, has_error: bool, root_duration_s: float | None) -> Decision:
        """``decide(trace_id, TraceFacts(has_error, root_duration_s))`` without building the facts: for the
        tail sampler's every trace when no rule looks at the entry span."""
        if self.rules:
            return self.decide(trace_id, TraceFacts(has_error, root_duration_s))
        if self.keep_all:
            return _ALL
        outcomes = self._default
        if has_error:
            return outcomes.error
        if root_duration_s is not None and root_duration_s >= self.slow_seconds:
            return outcomes.slow_kept
        return outcomes.ratio if trace_id & _TRACE_ID_LIMIT < outcomes.bound else outcomes.dropped

    def decide_partial(self, facts: TraceFacts) -> Decision:
        """After an early drop: keep what is left of the trace only for an error or a slow root."""
        outcomes = self._outcomes(facts)
        if facts.has_error and outcomes.errors:
            return outcomes.partial_error
        duration = facts.root_duration_s
        if duration is not None and duration >= self.slow_seconds and outcomes.slow:
            return outcomes.partial_slow
        return outcomes.dropped

    def decide_head(self, trace_id: int, facts: TraceFacts) -> Decision:
        """At the entry span's start: only the ratio can apply (errors and durations are unknown)."""
        outcomes = self._outcomes(facts)
        return outcomes.ratio if trace_id & _TRACE_ID_LIMIT < outcomes.bound else outcomes.dropped
