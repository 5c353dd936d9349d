"""The collector's tail_sampling policies: generated from the same rules and defaults as the SDK's."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from otel_crm._internal.collector_policy import (
    BEGIN_MARKER,
    END_MARKER,
    collector_policies,
    print_policies,
    render_policies,
    rule_condition,
    shipped_policies_block,
)
from otel_crm._internal.sampling import SamplingPolicy, SamplingRule, TraceFacts, compile_rules
from otel_crm._internal.settings import REGISTRY
from otel_crm.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "collector-config" / "otelcol.yaml", ROOT / "collector-config" / "gateway" / "sampler.yaml"]
ISSUE_EXAMPLE = [{"name": "health", "route": "/health*", "ratio": 0, "errors": False},
                 {"name": "vip", "tenant": "vip-*", "ratio": 1},
                 {"route": "/webhooks/*", "ratio": 0.01}]
DEFAULTS = {s.name: s.default for s in REGISTRY}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_carry_exactly_the_generated_policies(path: Path) -> None:
    text = path.read_text()
    start = text.index(BEGIN_MARKER)
    start = text.rindex("\n", 0, start) + 1
    end = text.index(END_MARKER) + len(END_MARKER) + 1
    assert text[start:end] == shipped_policies_block(), "run `python scripts/collector_policy.py`"
    assert text.count(BEGIN_MARKER) == 1


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_policies_agree_with_the_python_defaults(path: Path) -> None:
    """Read from the file itself (not from the generator): ratio, slow threshold, errors kept."""
    text = path.read_text()
    block = text[text.index("    policies:\n"):text.index(END_MARKER)]
    slow = re.search(r"threshold_ms: \$\{env:OTELCOL_SLOW_THRESHOLD_MS:-(\d+)\}", block)
    assert slow and int(slow.group(1)) == round(DEFAULTS["sampling_slow_seconds"] * 1000)
    baseline = re.search(r"- name: baseline\n\s+type: probabilistic\n\s+probabilistic:\n"
                         r"\s+sampling_percentage: \$\{env:OTELCOL_BASELINE_PERCENT:-([\d.]+)\}", block)
    assert baseline and float(baseline.group(1)) == pytest.approx(DEFAULTS["sampling_ratio"] * 100)
    assert re.search(r"- name: errors\n\s+type: status_code\n\s+status_code:\n\s+status_codes: \[ERROR\]", block)
    assert DEFAULTS["sampling_rules"] == (), "no default rules: the three plain policies are the defaults"
    top_level = re.findall(r"^      - name: (\S+)", block, re.M)
    assert top_level == ["errors", "slow", "baseline", "decided-in-process"]


def test_script_check_passes_on_the_shipped_configs() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "collector_policy.py"), "--check"],
                            capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_conditions_are_ottl_with_escaped_re2_globs() -> None:
    rule = SamplingRule("r", 1.0, route='/a.b/"q"/*', method="POST", tenant="t?", operation="sync *",
                        service="crm")
    condition = rule_condition(rule)
    assert condition == ('span.kind != SPAN_KIND_CLIENT and span.kind != SPAN_KIND_PRODUCER'
                         ' and IsMatch(span.attributes["http.route"], "(?s)^/a\\\\.b/\\"q\\"/.*$")'
                         ' and span.attributes["http.request.method"] == "POST"'
                         ' and IsMatch(span.attributes["crm.tenant.id"], "(?s)^t.$")'
                         ' and IsMatch(span.name, "(?s)^sync .*$")'
                         ' and resource.attributes["service.name"] == "crm"')


def test_when_every_rule_keeps_errors_and_slow_one_policy_each_does() -> None:
    rules = compile_rules([{"name": "vip", "tenant": "vip-*", "ratio": 1}, {"route": "/x", "ratio": 0.5}])[0]
    names = [p["name"] for _, p in collector_policies(rules, ratio=0.1, slow_seconds=2.0)]
    assert names == ["errors", "slow", "vip/ratio", "rule2/ratio", "baseline", "decided-in-process"]
    names = [p["name"] for _, p in collector_policies(compile_rules(ISSUE_EXAMPLE)[0], ratio=0.1, slow_seconds=2.0)]
    assert names == ["vip/errors", "rule3/errors", "errors", "slow", "vip/ratio", "rule3/ratio", "baseline",
                     "decided-in-process"], "health (errors: false, ratio 0) has no policy of its own"


# --- the generated logic is the SDK's first-match logic ---------------------------------------------------

def _evaluate(policy: dict[str, Any], facts: TraceFacts, rules: dict[str, SamplingRule], ratio_keep: Any,
              slow_ms: int) -> bool:
    """A model of the collector's evaluation (and/not/leaves) over one single-entry trace."""
    kind = policy["type"]
    if kind == "and":
        return all(_evaluate(p, facts, rules, ratio_keep, slow_ms) for p in policy["and"]["and_sub_policy"])
    if kind == "not":
        return not _evaluate(policy["not"]["not_sub_policy"], facts, rules, ratio_keep, slow_ms)
    if kind == "ottl_condition":
        rule = rules[policy["name"].removeprefix("match/")]
        return SamplingPolicy(rules=(rule,)).rule_for(facts) is not None
    if kind == "status_code":
        return facts.has_error
    if kind == "latency":
        return facts.root_duration_s is not None and facts.root_duration_s * 1000 >= slow_ms
    if kind == "probabilistic":
        return bool(ratio_keep(policy["probabilistic"]["sampling_percentage"] / 100))
    if kind == "string_attribute":
        return False  # decided-in-process: not in this model (these traces come from `collector`-mode services)
    raise AssertionError(kind)


def test_the_collector_policies_keep_what_the_sdk_policy_keeps() -> None:
    raw = [*ISSUE_EXAMPLE, {"name": "slowjobs", "operation": "job *", "ratio": 0.5, "slow": False},
           {"name": "posts", "method": "post", "service": "crm", "ratio": 0.3, "errors": False}]
    rules = compile_rules(raw)[0]
    by_name = {r.name: r for r in rules}
    sdk = SamplingPolicy(ratio=0.1, slow_seconds=2.0, rules=rules)
    policies = [p for _, p in collector_policies(rules, ratio=0.1, slow_seconds=2.0)]
    rng = random.Random(5)
    values = {"route": ["/health", "/health/live", "/webhooks/s", "/leads", None],
              "tenant": ["vip-a", "acme", None], "operation": ["job sync", "GET /leads", None],
              "method": ["POST", "GET", None], "service": ["crm", "billing"]}
    for _ in range(4000):
        trace_id = rng.getrandbits(128)
        facts = TraceFacts(rng.random() < 0.3, rng.choice([0.1, 2.0, 5.0]),
                           **{k: rng.choice(v) for k, v in values.items()})
        expected = sdk.decide(trace_id, facts).keep

        def ratio_keep(ratio: float, trace_id: int = trace_id) -> bool:  # the SDK's hash, for the model
            return SamplingPolicy(ratio=min(ratio, 1.0)).decide(trace_id, TraceFacts()).keep

        got = any(_evaluate(p, facts, by_name, ratio_keep, 2000) for p in policies)
        assert got == expected, (facts, sdk.decide(trace_id, facts))


# --- rendering and the command ----------------------------------------------------------------------------

def test_yaml_quotes_what_needs_quoting() -> None:
    text = render_policies([("a comment", {"name": "it's", "type": "x", "x": {"values": [".+", "yes"],
                                                                              "n": 1.5, "flag": True}})])
    assert text == ("policies:\n  # a comment\n  - name: 'it''s'\n    type: x\n    x:\n"
                    "      values: ['.+', 'yes']\n      n: 1.5\n      flag: true\n")


def test_collector_policy_command(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    assert print_policies({"OTEL_CRM_SAMPLING_RULES": json.dumps(ISSUE_EXAMPLE),
                           "OTEL_CRM_SAMPLING_RATIO": "0.2"}, out) == 0
    text = out.getvalue()
    assert text.startswith("# tail_sampling policies for 3 sampling rule(s), default ratio 0.2")
    assert "sampling_percentage: 20\n" in text and "name: rule3/ratio" in text
    out = io.StringIO()
    assert print_policies({"OTEL_CRM_SAMPLING_RULES": '[{"ratio": 7}]'}, out) == 1, "a bad rule: status 1"
    assert "0 sampling rule(s)" in out.getvalue()
    out = io.StringIO()
    print_policies({}, out, env_defaults=True)
    assert "${env:OTELCOL_BASELINE_PERCENT:-10}" in out.getvalue()
    monkeypatch.setenv("OTEL_CRM_SAMPLING_RULES", "[]")
    assert main(["collector-policy", "--shipped"]) == 0
    assert capsys.readouterr().out == shipped_policies_block(indent=0)
    assert main(["collector-policy", "--shipped", "--indent", "4"]) == 0
    assert capsys.readouterr().out == shipped_policies_block(), "what the shipped configs carry"
