"""The standard OTEL_* variables upstream reads: each checked like otel_crm's own settings, a
refused value removed from the environment before upstream reads it, import-time ones set aside by
otel_crm_select.pth."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import sysconfig

import pytest
from opentelemetry.sdk.trace import SpanLimits

from otel_crm._internal.settings import REGISTRY, SettingsError, discard_invalid_standard_variables, resolve_settings
from otel_crm._internal.settings_std import PRE_IMPORT_VARIABLES, STANDARD_NAMES, stashed_name
from tests.support.processes import ROOT

PTH = ROOT / "otel_crm_select.pth"


def _one_problem(env: dict[str, str]) -> str:
    (problem,) = resolve_settings(env).problems
    return problem.message()


@pytest.mark.parametrize(("variable", "good", "bad"), [
    ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "64", "abc"),
    ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "unset", "-1"),
    ("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", " 0 ", "1.5"),
    ("OTEL_BLRP_MAX_QUEUE_SIZE", "100", "abc"),
    ("OTEL_METRIC_EXPORT_TIMEOUT", "1000", "-5"),
    ("OTEL_METRICS_EXEMPLAR_FILTER", "ALWAYS_OFF", "sometimes"),
    ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta", "abc"),
    ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "2.5", "abc"),
    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "a=b", "novalue"),
    ("OTEL_EXPORTER_OTLP_CERTIFICATE", __file__, "/nonexistent/ca.pem"),
    ("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "health,^/static/.*", "("),
    ("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "x-.*", "(unclosed"),
    ("OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES", "unavailable,DEADLINE_EXCEEDED", "abc"),
    ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio", "sometimes"),
    ("OTEL_TRACES_SAMPLER_ARG", "0.25", "2"),
    ("OTEL_PYTHON_CONTEXT", "contextvars_context", "abc"),
    ("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "host,os", "host,abc"),
    ("OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_GEVENT_PATCH", "patch_all", "patch_some"),
])
def test_good_values_pass_and_a_bad_one_is_one_line(variable: str, good: str, bad: str) -> None:
    assert resolve_settings({variable: good}).problems == ()
    message = _one_problem({variable: bad})
    shown = "'****'" if variable.endswith("_HEADERS") else repr(bad)  # a malformed secret is never echoed
    assert f"{variable}={shown}" in message and "using" in message
    with pytest.raises(SettingsError, match=variable):
        resolve_settings({variable: bad, "OTEL_CRM_STRICT": "true"})


def test_every_standard_variable_is_in_the_registry_once() -> None:
    variables = [v for s in REGISTRY if s.name in STANDARD_NAMES for v in s.env]
    assert len(variables) == len(set(variables)) and all(v.startswith("OTEL_") for v in variables)
    assert not any(v.startswith("OTEL_CRM_") for v in variables)


def test_propagators_known_names_unknown_names_and_missing_packages() -> None:
    assert resolve_settings({}).propagators == ("tracecontext", "baggage")
    assert resolve_settings({"OTEL_PROPAGATORS": "baggage, tracecontext"}).propagators == ("baggage", "tracecontext")
    assert resolve_settings({"OTEL_PROPAGATORS": "None"}).propagators == ("none",)
    unknown = resolve_settings({"OTEL_PROPAGATORS": "tracecontext,garbage"})
    assert unknown.propagators == ("tracecontext", "baggage")
    assert "OTEL_PROPAGATORS='tracecontext,garbage'" in unknown.problems[0].message()
    # jaeger is a known name whose package (opentelemetry-propagator-jaeger) is not installed here.
    missing = resolve_settings({"OTEL_PROPAGATORS": "tracecontext,jaeger"})
    assert missing.propagators == ("tracecontext",)
    (problem,) = missing.problems
    assert "opentelemetry-propagator-jaeger" in problem.message() and "using 'tracecontext'" in problem.message()
    with pytest.raises(SettingsError, match="OTEL_PROPAGATORS"):
        resolve_settings({"OTEL_PROPAGATORS": "jaeger", "OTEL_CRM_STRICT": "true"})


def test_b3_is_accepted_when_its_package_is_installed() -> None:
    pytest.importorskip("opentelemetry.propagators.b3")
    assert resolve_settings({"OTEL_PROPAGATORS": "b3multi,baggage"}).propagators == ("b3multi", "baggage")


def test_a_value_set_aside_at_import_is_read_under_its_own_name() -> None:
    env = {stashed_name("OTEL_PROPAGATORS"): "garbage"}
    assert "invalid OTEL_PROPAGATORS='garbage'" in _one_problem(env)
    with pytest.raises(SettingsError, match="OTEL_PROPAGATORS='garbage'"):
        resolve_settings({**env, "OTEL_CRM_STRICT": "true"})
    # The variable itself, when present, wins over a stale stash.
    assert resolve_settings({**env, "OTEL_PROPAGATORS": "tracecontext"}).problems == ()


def test_refused_and_blank_values_leave_the_environment_valid_ones_stay(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="otel_crm")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "abc")
    monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", " ")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "12")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "novalue")  # a standard variable otel_crm reads too
    monkeypatch.setenv("OTEL_CRM_SCRUB_MODE", "abc")  # ours: read from settings only, never removed
    with pytest.raises(ValueError):
        SpanLimits()  # what upstream does with the raw value
    settings = resolve_settings()
    discard_invalid_standard_variables(settings)
    assert "OTEL_SPAN_EVENT_COUNT_LIMIT" not in os.environ and "OTEL_SPAN_LINK_COUNT_LIMIT" not in os.environ
    assert os.environ["OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT"] == "12"
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in os.environ
    assert os.environ["OTEL_CRM_SCRUB_MODE"] == "abc"
    limits = SpanLimits()
    assert (limits.max_events, limits.max_links, limits.max_span_attribute_length) == (128, 128, 12)
    assert len([r for r in caplog.records if "OTEL_SPAN_EVENT_COUNT_LIMIT" in r.getMessage()]) == 1


def _after_pth(**env: str) -> dict[str, str]:
    """The environment after otel_crm_select.pth's line ran (site skipped: the installed copy may lag)."""
    code = f"exec(open({str(PTH)!r}).read()); import json, os; print(json.dumps(dict(os.environ)))"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean["PYTHONPATH"] = sysconfig.get_paths()["purelib"]  # entry points, without running its .pth files
    result = subprocess.run([sys.executable, "-S", "-c", code], env={**clean, **env}, capture_output=True,
                            text=True, check=True)
    return dict(json.loads(result.stdout))


def test_the_pth_sets_aside_invalid_import_time_values_only() -> None:
    text = PTH.read_text()
    assert all(f'"{name}"' in text for name in PRE_IMPORT_VARIABLES)
    bad = _after_pth(OTEL_PROPAGATORS="garbage", OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT="abc", OTEL_PYTHON_CONTEXT="x",
                     OTEL_EXPERIMENTAL_RESOURCE_DETECTORS="host,abc",
                     OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_GEVENT_PATCH="nope")
    for name in PRE_IMPORT_VARIABLES:
        assert name not in bad and bad[stashed_name(name)], name
    good = {"OTEL_PROPAGATORS": "tracecontext,baggage", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "64",
            "OTEL_PYTHON_CONTEXT": "contextvars_context", "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "host,os",
            "OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_GEVENT_PATCH": "patch_all"}
    kept = _after_pth(**good)
    assert {k: kept[k] for k in good} == good and not any(k.startswith("OTEL_CRM_INVALID_") for k in kept)
    assert _after_pth()["OTEL_PYTHON_DISTRO"] == "otel_crm"
