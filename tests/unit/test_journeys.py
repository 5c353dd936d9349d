"""Journey declarations: the shape, every rule, cumulative targets, and where they come from."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from otel_crm._internal.journeys import journeys_from_settings, load_journeys, parse_journeys
from otel_crm._internal.settings import SettingsError, resolve_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "journeys"


def _spec(*milestones: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"j": {"milestones": list(milestones), **extra}}


def test_the_onboarding_example_has_the_playbook_targets() -> None:
    journey = load_journeys(EXAMPLES / "onboarding.json")["onboarding"]
    assert [m.name for m in journey.milestones] == ["signed_up", "first_project", "first_agent",
                                                    "first_workflow", "first_success"]
    assert [m.stage_target_s for m in journey.milestones] == [0, 300, 600, 900, 1800]
    assert [m.target_s for m in journey.milestones] == [0, 300, 900, 1800, 3600]  # cumulative
    assert journey.total_target_s == 3600
    assert journey.last.name == "first_success" and journey.milestone("first_agent").index == 2
    assert journey.milestone("nope") is None


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_every_example_file_loads(path: Path) -> None:
    assert load_journeys(path)


def test_total_target_is_optional() -> None:
    journey = parse_journeys(_spec({"name": "a"}, {"name": "b", "target_s": 60}, {"name": "c", "target_s": 1.5}))["j"]
    assert journey.total_target_s == 61.5
    assert parse_journeys(_spec({"name": "a", "target_s": 0}, {"name": "b", "target_s": 60}))["j"].total_target_s == 60


@pytest.mark.parametrize(("document", "message"), [
    ([], "expected a JSON object of journeys"),
    ({"j": []}, "journey 'j': expected an object"),
    ({"j": {}}, "at least two"),
    (_spec({"name": "a"}), "at least two"),
    ({"j": {"milestones": [{"name": "a"}, {"name": "b", "target_s": 1}], "target": 5}}, "unknown key(s) ['target']"),
    (_spec({"name": "a"}, {"name": "b", "target": 60}), "unknown key(s) ['target']"),
    (_spec({"name": "a"}, "b"), "milestone 1: expected an object"),
    (_spec({"name": "a", "target_s": 5}, {"name": "b", "target_s": 60}), "the first milestone is the start"),
    (_spec({"name": "a"}, {"name": "b"}), "must be > 0"),
    (_spec({"name": "a"}, {"name": "b", "target_s": -1}), "must be > 0"),
    (_spec({"name": "a"}, {"name": "b", "target_s": True}), "expected a number of seconds"),
    (_spec({"name": "a"}, {"name": "b", "target_s": "60"}), "expected a number of seconds"),
    (_spec({"name": "a"}, {"name": "b", "target_s": float("nan")}), "expected a number of seconds"),
    (_spec({"name": "a"}, {"name": "a", "target_s": 60}), "declared twice"),
    (_spec({"name": "a"}, {"name": "has space", "target_s": 60}), "must start with a letter"),
    (_spec({"name": "a"}, {"name": "x" * 65, "target_s": 60}), "at most 64 characters"),
    (_spec({"name": "a"}, {"target_s": 60}), "name None"),
    ({"1bad": {"milestones": [{"name": "a"}, {"name": "b", "target_s": 1}]}}, "name '1bad'"),
    (_spec({"name": "a"}, {"name": "b", "target_s": 60}, total_target_s=3600),
     "total_target_s (3600) must equal the sum of the stage targets (60)"),
])
def test_invalid_declarations_name_the_problem(document: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_journeys(document)
    assert message in str(raised.value)


def test_file_then_inline_journeys_replace_by_name(tmp_path: Path) -> None:
    path = tmp_path / "journeys.json"
    path.write_text(json.dumps({
        "a": {"milestones": [{"name": "s"}, {"name": "e", "target_s": 10}]},
        "b": {"milestones": [{"name": "s"}, {"name": "e", "target_s": 10}]}}))
    inline = {"b": {"milestones": [{"name": "s"}, {"name": "done", "target_s": 20}]}}
    journeys = journeys_from_settings(resolve_settings({}, journeys_file=str(path), journeys=inline))
    assert sorted(journeys) == ["a", "b"]
    assert journeys["b"].last.name == "done" and journeys["a"].last.name == "e"


def test_a_broken_source_is_ignored_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad_file = tmp_path / "bad.json"
    bad_file.write_text('{"a": {"milestones": [{"name": "s"}]}}')
    good = {"b": {"milestones": [{"name": "s"}, {"name": "e", "target_s": 10}]}}
    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        journeys = journeys_from_settings(resolve_settings({}, journeys_file=str(bad_file), journeys=good))
    assert sorted(journeys) == ["b"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"OTEL_CRM_JOURNEYS_FILE={bad_file} ignored" in warnings[0] and "at least two" in warnings[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        assert journeys_from_settings(resolve_settings({}, journeys_file=str(tmp_path / "missing.json"))) == {}
        assert journeys_from_settings(resolve_settings({}, journeys={"b": {"milestones": []}})) == {}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "No such file" in messages[0]
    assert "journeys (configure(journeys=...) or OTEL_CRM_JOURNEYS) ignored" in messages[1]


def test_journeys_from_the_environment() -> None:
    document = {"b": {"milestones": [{"name": "s"}, {"name": "e", "target_s": 10}]}}
    settings = resolve_settings({"OTEL_CRM_JOURNEYS": json.dumps(document),
                                 "OTEL_CRM_JOURNEYS_FILE": "/etc/crm/journeys.json"})
    assert settings.journeys == document and settings.journeys_file == "/etc/crm/journeys.json"
    assert resolve_settings({}).journeys == {} and resolve_settings({}).journeys_file == ""


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"text"'])
def test_a_journeys_variable_that_is_not_a_json_object_is_one_problem(raw: str) -> None:
    settings = resolve_settings({"OTEL_CRM_JOURNEYS": raw})
    assert settings.journeys == {}
    assert [p.variable for p in settings.problems] == ["OTEL_CRM_JOURNEYS"]
    assert "expected a JSON object" in settings.problems[0].message()
    with pytest.raises(SettingsError):
        resolve_settings({"OTEL_CRM_JOURNEYS": raw, "OTEL_CRM_STRICT": "true"})


def test_the_journeys_argument_takes_a_mapping_or_json_text() -> None:
    document = {"b": {"milestones": [{"name": "s"}, {"name": "e", "target_s": 10}]}}
    assert resolve_settings({}, journeys=document).journeys == document
    assert resolve_settings({}, journeys=json.dumps(document)).journeys == document
    settings = resolve_settings({}, journeys=["b"])
    assert settings.journeys == {} and settings.problems[0].variable == "argument journeys"
