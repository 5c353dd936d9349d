"""The sampling policy: the default rule, sampling rules (validation, first match, globs), facts."""

from __future__ import annotations

import dataclasses
import logging
import random

import pytest
from opentelemetry.sdk.trace.sampling import Decision as SdkDecision
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from otel_crm._internal.sampling.policy import (
    MAX_RULES,
    SamplingPolicy,
    SamplingRule,
    TraceFacts,
    compile_rules,
    glob_match,
    glob_regex,
)
from otel_crm._internal.settings import SettingsError, resolve_settings

BOUND = round(0.1 * 2**64)  # TraceIdRatioBased(0.1)'s bound
KEEP_ID = (0xABC << 64) | (BOUND - 1)  # kept by the 10% ratio (low 64 bits just under the bound)
DROP_ID = (0xABC << 64) | BOUND  # dropped by it (exactly the bound)
ISSUE_EXAMPLE = [{"name": "health", "route": "/health*", "ratio": 0, "errors": False},
                 {"name": "vip", "tenant": "vip-*", "ratio": 1},
                 {"route": "/webhooks/*", "ratio": 0.01}]


def facts(error: bool = False, seconds: float | None = 0.01, **entry: str) -> TraceFacts:
    return TraceFacts(error, seconds, **entry)


# --- the default rule ---------------------------------------------------------------------------------

def test_policy_rules_and_boundaries() -> None:
    policy = SamplingPolicy()
    assert (policy.ratio, policy.slow_seconds, policy.keep_all) == (0.1, 2.0, False)
    ok = facts()
    assert policy.decide(KEEP_ID, ok).reason == "ratio"
    assert policy.decide(KEEP_ID, ok).weight == 10.0
    assert policy.decide(DROP_ID, ok).reason == "dropped"
    assert not policy.decide(DROP_ID, ok).keep
    assert policy.decide(DROP_ID, facts(True, None)).reason == "error"
    assert policy.decide(DROP_ID, facts(False, 2.0)).reason == "slow"
    assert policy.decide(DROP_ID, facts(False, 1.999)).reason == "dropped"
    assert policy.decide(DROP_ID, facts(False, None)).reason == "dropped"
    assert SamplingPolicy(keep_all=True).decide(DROP_ID, ok).reason == "all"
    assert SamplingPolicy(ratio=0.0).decide(1, ok).reason == "dropped"
    assert SamplingPolicy(ratio=1.0).decide(2**128 - 1, ok).reason == "ratio"
    assert SamplingPolicy(ratio=1.0).decide(2**128 - 1, ok).weight == 1.0
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            SamplingPolicy(ratio=bad)
    with pytest.raises(ValueError, match="slow"):
        SamplingPolicy(slow_seconds=-1)


@pytest.mark.parametrize("ratio", [0.0, 0.001, 0.1, 0.25, 0.5, 1.0])
def test_policy_is_exactly_the_sdk_trace_id_ratio_rule(ratio: float) -> None:
    sdk = TraceIdRatioBased(ratio)
    policy = SamplingPolicy(ratio=ratio)
    ruled = SamplingPolicy(ratio=0.5, rules=(SamplingRule("r", ratio, route="/x"),))
    rng = random.Random(1)
    ids = [rng.getrandbits(128) for _ in range(20_000)]
    sdk_bound = sdk.bound
    ids += [sdk_bound, sdk_bound - 1, sdk_bound + 1, (5 << 64) | sdk_bound, 0, 2**64 - 1]
    for trace_id in ids:
        theirs = sdk.should_sample(None, trace_id, "x").decision is SdkDecision.RECORD_AND_SAMPLE
        assert policy.decide(trace_id, facts(False, 0.0)).keep == theirs, hex(trace_id)
        assert ruled.decide(trace_id, facts(route="/x")).keep == theirs, "a rule's ratio: the same rule"
        assert ruled.decide_head(trace_id, facts(route="/x")).keep == theirs, "head and tail agree"


def test_facts_and_decisions_are_frozen_and_slotted() -> None:
    with pytest.raises(AttributeError):
        facts().has_error = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        SamplingPolicy().decide(KEEP_ID, facts()).keep = False  # type: ignore[misc]
    assert not hasattr(facts(), "__dict__")
    decision = SamplingPolicy().decide(KEEP_ID, facts())
    assert (decision.rule, decision.partial) == (None, False)
    assert not hasattr(decision, "__dict__")


# --- rules ---------------------------------------------------------------------------------------------

def test_the_issue_example_first_match_wins() -> None:
    rules, problems = compile_rules(ISSUE_EXAMPLE)
    assert problems == []
    assert [r.name for r in rules] == ["health", "vip", "rule3"], "unnamed rules are named by position"
    policy = SamplingPolicy(ratio=0.1, rules=rules)
    health = policy.decide(KEEP_ID, facts(route="/health/live"))
    assert (health.keep, health.rule) == (False, "health"), "ratio 0 drops even an id the default keeps"
    assert not policy.decide(DROP_ID, facts(True, route="/health")).keep, "errors: false"
    slow = policy.decide(DROP_ID, facts(False, 3.0, route="/health"))
    assert (slow.reason, slow.rule) == ("slow", "health"), "slow traces still kept (slow defaults to true)"
    vip = policy.decide(DROP_ID, facts(route="/leads", tenant="vip-acme"))
    assert (vip.keep, vip.reason, vip.weight, vip.rule) == (True, "ratio", 1.0, "vip")
    assert policy.decide(DROP_ID, facts(route="/health", tenant="vip-acme")).rule == "health", "first wins"
    webhook = policy.decide(2**64 - 1, facts(route="/webhooks/stripe", tenant="acme"))
    assert (webhook.keep, webhook.rule) == (False, "rule3")
    kept = policy.decide(1, facts(route="/webhooks/stripe"))
    assert (kept.keep, kept.weight, kept.rule) == (True, pytest.approx(100.0), "rule3")
    error = policy.decide(DROP_ID, facts(True, route="/webhooks/stripe"))
    assert (error.reason, error.rule) == ("error", "rule3"), "errors kept by default"
    default = policy.decide(KEEP_ID, facts(route="/leads", tenant="acme"))
    assert (default.reason, default.weight, default.rule) == ("ratio", 10.0, None), "no match: default"


def test_every_field_must_match_and_missing_entry_fields_never_match() -> None:
    rule = SamplingRule("r", 1.0, route="/leads/*", method="post", tenant="t?", operation="POST *",
                        service="crm")
    policy = SamplingPolicy(ratio=0.0, rules=compile_rules([rule])[0])
    full = {"route": "/leads/<id>", "method": "POST", "tenant": "t1", "operation": "POST /leads/<id>",
            "service": "crm"}
    assert policy.decide(DROP_ID, facts(**full)).rule == "r", "method matches in any case"
    assert policy.decide(DROP_ID, facts(**{**full, "method": "post"})).rule == "r"
    for name, other in (("route", "/lead"), ("method", "GET"), ("tenant", "t12"), ("operation", "GET /x"),
                        ("service", "crm2")):
        assert policy.decide(DROP_ID, facts(**{**full, name: other})).rule is None, name
    assert policy.decide(DROP_ID, facts(**{k: v for k, v in full.items() if k != "tenant"})).rule is None


def test_globs_have_two_wildcards_everything_else_literal() -> None:
    assert glob_regex("/a.b/*/c?") == r"(?s)^/a\.b/.*/c.$"
    policy = SamplingPolicy(rules=(SamplingRule("r", 1.0, route="/a.b/(x)[1]*"),))
    assert policy.rule_for(facts(route="/a.b/(x)[1]/tail")) is not None
    assert policy.rule_for(facts(route="/aXb/(x)[1]/tail")) is None, "a dot is a dot"
    assert policy.rule_for(facts(route="/a.b/(x)1")) is None, "brackets are literal"


@pytest.mark.parametrize("glob", ["exact", "pre*", "*suf", "*mid*", "*", "**", "a*b", "a?c*", "?", "x**",
                                  "**y", "*.*"])
def test_every_glob_shape_matches_like_its_regular_expression(glob: str) -> None:
    import re

    policy = SamplingPolicy(rules=(SamplingRule("r", 1.0, tenant=glob),))
    regex = re.compile(glob_regex(glob).removeprefix("(?s)^").removesuffix("$"), re.DOTALL)
    rng = random.Random(glob)
    alphabet = "abcxy.*?\n"
    samples = ["", "exact", "pre", "prefix", "suf", "asuf", "mid", "amidb", "ab", "axxb", "abc", "abcd", "x",
               "y", "xy", "a.b", *("".join(rng.choices(alphabet, k=rng.randint(0, 5))) for _ in range(300))]
    for value in samples:
        matched = policy.rule_for(facts(tenant=value)) is not None
        assert matched == bool(regex.fullmatch(value)) == bool(glob_match(glob)(value)), (glob, value)


def test_partial_decisions_keep_only_errors_and_slow_roots_as_rules_allow() -> None:
    policy = SamplingPolicy(rules=compile_rules(ISSUE_EXAMPLE)[0])
    assert not policy.decide_partial(facts()).keep, "no ratio for the rest of a dropped trace"
    error = policy.decide_partial(facts(True))
    assert (error.keep, error.reason, error.partial) == (True, "error", True)
    slow = policy.decide_partial(facts(False, 9.0, route="/webhooks/x"))
    assert (slow.reason, slow.partial, slow.rule) == ("slow", True, "rule3")
    assert not policy.decide_partial(facts(True, route="/health")).keep, "errors: false holds"


def test_matching_is_cached_and_bounded() -> None:
    rules = tuple(SamplingRule(f"r{i}", 1.0, tenant=f"t{i}-*") for i in range(20))
    policy = SamplingPolicy(ratio=0.0, rules=rules)
    for i in range(10_000):  # more distinct tenants than the cache holds
        assert policy.decide(DROP_ID, facts(tenant=f"t{i % 25}-{i}")).rule == (f"r{i % 25}" if i % 25 < 20
                                                                                  else None)
    field = policy._fields[0]
    assert len(field._cache) <= 2048


# --- validation ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("rule", "expected"), [
    ({"route": "/x"}, "a ratio from 0 to 1"),
    ({"ratio": 1.5}, "a ratio from 0 to 1"),
    ({"ratio": True}, "a ratio from 0 to 1"),
    ({"ratio": "0.5"}, "a ratio from 0 to 1"),
    ({"ratio": 0.5, "rout": "/x"}, "unknown: rout"),
    ({"ratio": 0.5, "route": ""}, "route as a non-empty string"),
    ({"ratio": 0.5, "tenant": 7}, "tenant as a non-empty string"),
    ({"ratio": 0.5, "errors": "no"}, "errors as true or false"),
    ({"ratio": 0.5, "name": ""}, "name as a non-empty string"),
    (["ratio", 0.5], "a JSON object"),
])
def test_invalid_rules_are_left_out_and_named(rule: object, expected: str) -> None:
    rules, problems = compile_rules([{"name": "ok", "ratio": 1}, rule])
    assert [r.name for r in rules] == ["ok"], "the valid rule stays"
    assert len(problems) == 1 and expected in problems[0].reason
    assert problems[0].label.startswith("rule 2")


def test_duplicate_names_and_too_many_rules() -> None:
    _, problems = compile_rules([{"name": "a", "ratio": 1}, {"name": "a", "ratio": 0}])
    assert [(p.label, p.reason) for p in problems] == [('rule 2 "a"', "a name not used by an earlier rule "
                                                                      "('a' is)")]
    rules, problems = compile_rules([{"ratio": 1}] * (MAX_RULES + 2))
    assert len(rules) == MAX_RULES and len(problems) == 2


def test_setting_from_the_environment_and_from_configure(caplog: pytest.LogCaptureFixture) -> None:
    import json

    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        settings = resolve_settings({"OTEL_CRM_SAMPLING_RULES": json.dumps(
            [*ISSUE_EXAMPLE, {"name": "typo", "rout": "/x", "ratio": 1}])})
    assert [r.name for r in settings.sampling_rules] == ["health", "vip", "rule3"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, "one line for the one bad rule"
    assert 'OTEL_CRM_SAMPLING_RULES rule 4 "typo"' in lines[0] and "rule left out" in lines[0]
    explicit = resolve_settings({"OTEL_CRM_SAMPLING_RULES": "[]"}, sampling_rules=ISSUE_EXAMPLE)
    assert explicit.sampling_rules == settings.sampling_rules, "configure(sampling_rules=[...]) wins"
    assert resolve_settings({}).sampling_rules == ()


def test_strict_mode_refuses_an_invalid_rule() -> None:
    with pytest.raises(SettingsError, match=r'argument sampling_rules rule 1 "x".*a ratio from 0 to 1'):
        resolve_settings({}, strict=True, sampling_rules=[{"name": "x", "ratio": 2}])
    with pytest.raises(SettingsError, match="OTEL_CRM_SAMPLING_RULES"):
        resolve_settings({"OTEL_CRM_STRICT": "true", "OTEL_CRM_SAMPLING_RULES": '{"not": "a list"}'})


def test_a_policy_refuses_invalid_rules() -> None:
    with pytest.raises(ValueError, match="rule 1"):
        SamplingPolicy(rules=(SamplingRule("x", 2.0),))


def test_decide_plain_is_decide_without_the_facts() -> None:
    rules = compile_rules([{"name": "all", "ratio": 1.0}])[0]
    for policy in (SamplingPolicy(ratio=0.3), SamplingPolicy(keep_all=True), SamplingPolicy(ratio=0.3, rules=rules)):
        for trace_id in (0, 1 << 62, (1 << 64) - 1, (7 << 64) | 12345, 1 << 63):
            for error, duration in ((False, None), (True, 0.1), (False, 2.0), (False, 1.99)):
                assert policy.decide_plain(trace_id, error, duration) == policy.decide(
                    trace_id, TraceFacts(error, duration))
