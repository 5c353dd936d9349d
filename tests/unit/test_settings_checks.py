from __future__ import annotations

from otel_crm._internal.settings_checks import check_host, check_sampling_rules, header_or_none


def test_header_or_none() -> None:
    assert header_or_none("None", "V") == ("", [])
    assert header_or_none("X-Org-ID", "V") == ("X-Org-ID", [])


def test_check_host_keeps_names_and_addresses_and_replaces_the_rest() -> None:
    assert check_host(" db.internal ", "V") == ("db.internal", [])
    assert check_host("[::1]", "V") == ("[::1]", [])
    value, (problem,) = check_host("x" * 254, "V")
    assert value == "127.0.0.1" and problem.variable == "V"


def test_check_sampling_rules_leaves_out_a_bad_rule_and_names_it() -> None:
    rules, problems = check_sampling_rules([{"name": "ok", "route": "/a", "ratio": 1}, {"ratio": "x"}], "VAR")
    assert [r.name for r in rules] == ["ok"]
    assert len(problems) == 1 and problems[0].variable.startswith("VAR ") and problems[0].outcome == "rule left out"
