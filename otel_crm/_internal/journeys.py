"""Business journeys: their declaration (ordered milestones with per-stage targets) and its checks.

Declared once, as a JSON object (``configure(journeys=...)``, ``OTEL_CRM_JOURNEYS``, or the file
named by ``OTEL_CRM_JOURNEYS_FILE``)::

    {"onboarding": {"milestones": [{"name": "signed_up"},
                                   {"name": "first_project", "target_s": 300},
                                   {"name": "first_success", "target_s": 3300}],
                    "total_target_s": 3600}}

Rules (a violation names the journey, the milestone and the key):

- journey and milestone names: a letter, then letters, digits, ``_ . -``; at most 64 characters
  (they become metric labels);
- at least two milestones; the first is the start and has no ``target_s`` (or 0); every later one
  has ``target_s`` > 0, the stage target in seconds from the previous milestone; names are unique;
- a milestone's target is cumulative: the sum of the stage targets up to it;
- ``total_target_s`` is optional; when given it must equal the sum of the stage targets (it is
  a check against a typo, not a second target);
- no other keys (a misspelt ``target`` would otherwise silently mean "no target").

Both the file and ``journeys`` may be set: the file is read first and a journey of the same name
in ``journeys`` replaces it. A source that fails the checks is ignored as a whole, with one warning
naming it; its journeys are then unknown to ``journey_milestone`` (each call counted as an
internal error).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from otel_crm._internal.settings import Settings

__all__ = ["Journey", "Milestone", "journeys_from_settings", "load_journeys", "parse_journeys"]

_log = logging.getLogger("otel_crm")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_JOURNEY_KEYS = frozenset({"milestones", "total_target_s"})
_MILESTONE_KEYS = frozenset({"name", "target_s"})


@dataclass(frozen=True, slots=True)
class Milestone:
    """One milestone of a journey. ``target_s`` is cumulative (seconds from the start)."""

    name: str
    index: int
    stage_target_s: float  # from the previous milestone; 0 for the start
    target_s: float


@dataclass(frozen=True, slots=True)
class Journey:
    """A declared journey: its milestones in order; the first is the start, the last the end."""

    name: str
    milestones: tuple[Milestone, ...]
    _by_name: Mapping[str, Milestone] = field(repr=False, compare=False)

    @property
    def total_target_s(self) -> float:
        return self.milestones[-1].target_s

    @property
    def last(self) -> Milestone:
        return self.milestones[-1]

    def milestone(self, name: str) -> Milestone | None:
        return self._by_name.get(name)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a number of seconds, got {value!r}")
    return float(value)


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{where}: name {value!r} must start with a letter and use only letters, "
                         "digits, '_', '.', '-' (at most 64 characters)")
    return value


def _journey(name: str, spec: Any) -> Journey:
    if not isinstance(spec, Mapping):
        raise ValueError(f"journey {name!r}: expected an object with \"milestones\"")
    unknown = sorted(set(spec) - _JOURNEY_KEYS)
    if unknown:
        raise ValueError(f"journey {name!r}: unknown key(s) {unknown} (expected milestones, total_target_s)")
    items = spec.get("milestones")
    if not isinstance(items, list) or len(items) < 2:
        raise ValueError(f"journey {name!r}: \"milestones\" must be a list of at least two "
                         "(the start, then at least one more)")
    milestones: list[Milestone] = []
    total = 0.0
    for index, item in enumerate(items):
        where = f"journey {name!r}, milestone {index}"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: expected an object with \"name\" and \"target_s\"")
        unknown = sorted(set(item) - _MILESTONE_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown} (expected name, target_s)")
        milestone_name = _name(item.get("name"), where)
        where = f"journey {name!r}, milestone {milestone_name!r}"
        if any(m.name == milestone_name for m in milestones):
            raise ValueError(f"{where}: declared twice")
        stage = _number(item.get("target_s", 0), f"{where} target_s")
        if index == 0 and stage != 0:
            raise ValueError(f"{where}: the first milestone is the start and has no target_s")
        if index > 0 and stage <= 0:
            raise ValueError(f"{where}: target_s (seconds from the previous milestone) must be > 0")
        total += stage
        milestones.append(Milestone(milestone_name, index, stage, total))
    if "total_target_s" in spec:
        declared = _number(spec["total_target_s"], f"journey {name!r} total_target_s")
        if not math.isclose(declared, total, rel_tol=0, abs_tol=1e-6):
            raise ValueError(f"journey {name!r}: total_target_s ({declared:g}) must equal the sum of "
                             f"the stage targets ({total:g})")
    return Journey(name, tuple(milestones), {m.name: m for m in milestones})


def parse_journeys(document: Any) -> dict[str, Journey]:
    """Journeys from their JSON shape; raises ValueError naming the first problem."""
    if not isinstance(document, Mapping):
        raise ValueError("expected a JSON object of journeys")
    return {_name(name, "journey"): _journey(name, spec) for name, spec in document.items()}


def load_journeys(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Journey]:
    """Journeys from a JSON file path or an already-loaded mapping; raises OSError/ValueError.

    Handy in a CI step: ``python -c "from otel_crm.helpers import load_journeys;
    load_journeys('journeys.json')"`` fails on the same problems the runtime would warn about.
    """
    if isinstance(source, Mapping):
        return parse_journeys(source)
    with open(source, encoding="utf-8") as handle:
        return parse_journeys(json.load(handle))


def journeys_from_settings(settings: Settings) -> dict[str, Journey]:
    """The journeys the settings declare: the file first, then ``journeys`` over it. A source that
    cannot be read or fails the checks is ignored with one warning."""
    journeys: dict[str, Journey] = {}
    if settings.journeys_file:
        try:
            journeys.update(load_journeys(settings.journeys_file))
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            _log.warning("otel_crm: OTEL_CRM_JOURNEYS_FILE=%s ignored (%s); its journeys are unknown",
                         settings.journeys_file, exc)
    if settings.journeys:
        try:
            journeys.update(parse_journeys(settings.journeys))
        except ValueError as exc:
            _log.warning("otel_crm: journeys (configure(journeys=...) or OTEL_CRM_JOURNEYS) ignored (%s); "
                         "its journeys are unknown", exc)
    return journeys
