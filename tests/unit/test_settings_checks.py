from __future__ import annotations

from pathlib import Path

from otel_crm._internal.settings_checks import (
    check_endpoint,
    check_host,
    check_readable_file,
    check_sampling_rules,
    header_or_none,
)


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


def test_check_endpoint_accepts_urls_and_grpc_host_port() -> None:
    for good in ("http://collector:4317", "https://otlp.example.com/v1/traces", "http://[::1]:4318",
                 "collector.observability:4317"):
        assert check_endpoint(good, "V") == (good, []), good


def test_check_endpoint_refuses_what_every_export_would_fail_on() -> None:
    for bad in ("::not a url::", "http://", "ftp://collector:21", "http://collector:99999", "collector"):
        value, (problem,) = check_endpoint(bad, "OTEL_EXPORTER_OTLP_ENDPOINT")
        assert value == "" and "OTEL_EXPORTER_OTLP_ENDPOINT" in problem.message(), bad


def test_check_readable_file(tmp_path: Path) -> None:
    real = tmp_path / "prices.json"
    real.write_text("{}")
    assert check_readable_file(str(real), "V") == (str(real), [])
    for bad in (str(tmp_path / "missing.json"), "x" * 5000, str(tmp_path)):  # too long: no OSError
        value, (problem,) = check_readable_file(bad, "V")
        assert value == "" and "ignored" in problem.message()
