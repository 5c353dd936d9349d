from __future__ import annotations

import dataclasses
import logging
import re
import typing
from pathlib import Path

import pytest

from otel_crm._internal.settings import (
    REGISTRY,
    Kind,
    SamplingMode,
    Settings,
    SettingsError,
    distro_defaults,
    registry_markdown,
    resolve_settings,
)
from otel_crm._internal.settings_std import STANDARD_NAMES

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_without_any_variable() -> None:
    settings = resolve_settings({})
    assert settings.sampling_mode == "tail"
    assert settings.sampling_ratio == 0.1
    assert settings.environment == "production" and settings.profile == "production"
    assert settings.traces_exporter == ("otlp",)
    assert settings.problems == ()


def test_crm_variable_beats_the_standard_one() -> None:
    settings = resolve_settings({"OTEL_CRM_SERVICE_NAME": "crm", "OTEL_SERVICE_NAME": "std"})
    assert settings.service_name == "crm"
    assert resolve_settings({"OTEL_SERVICE_NAME": "std"}).service_name == "std"


def test_explicit_argument_beats_every_variable() -> None:
    settings = resolve_settings({"OTEL_CRM_SAMPLING_RATIO": "0.5"}, sampling_ratio=0.25)
    assert settings.sampling_ratio == 0.25
    assert "sampling_ratio" in settings.explicit


@pytest.mark.parametrize("raw,expected", [("true", True), ("1", True), ("YES", True), ("on", True),
                                          ("false", False), ("0", False), ("no", False), ("Off", False)])
def test_booleans_accept_only_the_documented_words(raw: str, expected: bool) -> None:
    assert resolve_settings({"OTEL_CRM_CAPTURE_USER_ID": raw}).capture_user_id is expected


def test_the_honeycomb_trap_bool_of_false_is_false() -> None:
    assert resolve_settings({"OTEL_CRM_TRUST_INCOMING_BAGGAGE": "false"}).trust_incoming_baggage is False


@pytest.mark.parametrize("variable,value,allowed", [
    ("OTEL_CRM_CAPTURE_USER_ID", "maybe", "true/false/1/0/yes/no/on/off"),
    ("OTEL_CRM_SAMPLING_RATIO", "1.5", "a number from 0 to 1"),
    ("OTEL_CRM_SAMPLING_RATIO", "nan", "a number from 0 to 1"),
    ("OTEL_CRM_SAMPLING_MAX_TRACES", "0", "an integer from 1 to 1000000"),
    ("OTEL_CRM_SAMPLING_MAX_TRACES", "2.5", "an integer from 1 to 1000000"),
    ("OTEL_CRM_SAMPLING_MODE", "sometimes", "one of tail, collector, head, off"),
    ("OTEL_TRACES_EXPORTER", "zipkin", "comma-separated values from otlp, console, none"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "novalue", "key=value pairs"),
    # Upstream Python reads this in seconds; the spec (and otel_crm) in milliseconds.
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "10", "an integer from 100 to 600000 (milliseconds)"),
])
def test_a_bad_value_logs_exactly_one_line_and_uses_the_default(
        caplog: pytest.LogCaptureFixture, variable: str, value: str, allowed: str) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        settings = resolve_settings({variable: value})
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    # A secret variable's value is never echoed, however malformed (issue #9): masked whole.
    shown = "****" if next(s for s in REGISTRY if variable in s.env).secret else value
    assert variable in lines[0] and repr(shown) in lines[0] and allowed in lines[0]
    assert shown == value or value not in lines[0]
    assert "using the default" in lines[0]
    default = next(s for s in REGISTRY if variable in s.env).default
    name = next(s for s in REGISTRY if variable in s.env).name
    assert getattr(settings, name) == default
    assert len(settings.problems) == 1


def test_strict_mode_raises_naming_every_bad_variable() -> None:
    with pytest.raises(SettingsError) as error:
        resolve_settings({"OTEL_CRM_STRICT": "true", "OTEL_CRM_SAMPLING_RATIO": "x",
                          "OTEL_CRM_SCRUB_MODE": "shred"})
    message = str(error.value)
    assert "OTEL_CRM_SAMPLING_RATIO='x'" in message and "OTEL_CRM_SCRUB_MODE='shred'" in message
    assert "redact, hash, off" in message
    assert len(error.value.problems) == 2


def test_strict_as_an_argument() -> None:
    with pytest.raises(SettingsError):
        resolve_settings({}, strict=True, sampling_ratio=7.0)


def test_bad_explicit_argument_is_reported_like_a_variable(caplog: pytest.LogCaptureFixture) -> None:
    settings = resolve_settings({}, sampling_mode="sometimes")
    assert settings.sampling_mode == "tail"
    assert "argument sampling_mode" in caplog.text


def test_unknown_argument_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="sampling_rate"):
        resolve_settings({}, sampling_rate=0.5)


def test_development_profile_keeps_everything() -> None:
    settings = resolve_settings({"OTEL_CRM_ENVIRONMENT": "development"})
    assert settings.profile == "development" and settings.sampling_ratio == 1.0
    # an explicit ratio still wins in development
    assert resolve_settings({"OTEL_CRM_ENVIRONMENT": "dev", "OTEL_CRM_SAMPLING_RATIO": "0.2"}).sampling_ratio == 0.2


def test_environment_from_resource_attributes() -> None:
    settings = resolve_settings({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=local,team=crm"})
    assert settings.environment == "local" and settings.profile == "development"
    assert settings.resource_attributes["team"] == "crm"


def test_lists_and_mappings() -> None:
    settings = resolve_settings({"OTEL_CRM_BAGGAGE_ALLOWED_HOSTS": " api.internal , .svc.local ",
                                 "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=abc%3D%3D,tenant=t1",
                                 "OTEL_CRM_SCRUB_PATTERNS": '["a,b", "c"]'})
    assert settings.baggage_allowed_hosts == ("api.internal", ".svc.local")
    assert settings.otlp_headers == {"x-api-key": "abc==", "tenant": "t1"}
    assert settings.scrub_patterns == ("a,b", "c")


def test_otlp_endpoints_follow_the_exporter_spec() -> None:
    grpc = resolve_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://col:4317"})
    assert grpc.endpoint_for("traces") == "http://col:4317"
    http = resolve_settings({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                             "OTEL_EXPORTER_OTLP_ENDPOINT": "http://col:4318/",
                             "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://logs:9000/custom"})
    assert http.endpoint_for("traces") == "http://col:4318/v1/traces"
    assert http.endpoint_for("logs") == "http://logs:9000/custom"
    assert resolve_settings({}).endpoint_for("metrics") == "http://localhost:4317"


def test_settings_are_frozen() -> None:
    settings = resolve_settings({})
    with pytest.raises(AttributeError):
        settings.sampling_ratio = 1.0  # type: ignore[misc]
    assert isinstance(settings.replace(sampling_ratio=1.0), Settings)


def test_registry_matches_the_dataclass() -> None:
    fields = set(Settings.__dataclass_fields__) - {"problems", "explicit"}
    assert fields == {s.name for s in REGISTRY}
    assert all(s.doc and s.env for s in REGISTRY)
    assert all(v.startswith("OTEL_") for s in REGISTRY for v in s.env)


def test_the_registry_is_derived_from_the_fields_in_their_order() -> None:
    names = [f.name for f in dataclasses.fields(Settings) if f.name not in ("problems", "explicit")]
    # otel_crm's own settings in field order, then the standard variables upstream reads (settings_std.py).
    own = [name for name in names if name not in STANDARD_NAMES]
    assert [s.name for s in REGISTRY] == own + [name for name in names if name in STANDARD_NAMES]
    assert own[0] == "strict" and STANDARD_NAMES and not STANDARD_NAMES & set(own)
    # The field's own default is the registry's: Settings() is the production-profile defaults.
    defaults = Settings()
    assert all(getattr(defaults, s.name) == s.default for s in REGISTRY)


def test_modes_are_literal_types_and_their_choices_come_from_them() -> None:
    entry = {s.name: s for s in REGISTRY}
    assert entry["sampling_mode"].kind is Kind.ENUM
    assert entry["sampling_mode"].choices == typing.get_args(SamplingMode) == ("tail", "collector", "head", "off")
    assert entry["traces_exporter"].kind is Kind.ENUM_LIST
    assert entry["traces_exporter"].choices == ("otlp", "console", "none")
    assert entry["otlp_insecure"].kind is Kind.BOOL and entry["otlp_insecure"].default is None
    assert entry["otlp_headers"].kind is Kind.MAPPING and entry["baggage_allowed_hosts"].kind is Kind.LIST
    for name in ("otlp_protocol", "otlp_compression", "log_format", "log_level", "scrub_mode"):
        assert entry[name].kind is Kind.ENUM and entry[name].choices, name


def test_distro_defaults_come_from_the_registry() -> None:
    assert distro_defaults() == {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp",
                                 "OTEL_LOGS_EXPORTER": "otlp", "OTEL_SEMCONV_STABILITY_OPT_IN": "http,database"}
    assert Settings().semconv_stability_opt_in == distro_defaults()["OTEL_SEMCONV_STABILITY_OPT_IN"]


def test_a_mapping_default_is_not_shared_between_instances() -> None:
    assert Settings().otlp_headers is not Settings().otlp_headers


def test_settings_table_in_the_docs_is_generated_from_the_registry() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    assert registry_markdown() in docs, "run `make readme-tables`"


def test_os_environ_is_read_only_by_the_settings_module() -> None:
    # Writing defaults for other libraries (the distro, the semconv opt-in) is fine; reading is not.
    reads = re.compile(r"os\.environ(\.get|\.copy|\.items|\[[^\]]+\](?!\s*=))|getenv\(|in os\.environ")
    offenders = [path.name for path in (ROOT / "otel_crm").rglob("*.py")
                 if path.name != "settings.py" and reads.search(path.read_text())]
    assert offenders == []


@pytest.mark.parametrize("variable, field", [("OTEL_CRM_TENANT_HEADER", "tenant_header"),
                                             ("OTEL_CRM_USER_HEADER", "user_header")])
def test_header_settings_switch_off_with_none_while_empty_means_unset(variable: str, field: str) -> None:
    assert getattr(resolve_settings({variable: "none"}), field) == ""
    assert getattr(resolve_settings({variable: "NONE"}), field) == ""
    assert getattr(resolve_settings({variable: ""}), field) != ""  # empty: unset, the default
    assert getattr(resolve_settings({variable: "X-Org-ID"}), field) == "X-Org-ID"


@pytest.mark.parametrize(("variables", "shown"), [
    ({"OTEL_EXPORTER_OTLP_HEADERS": "x-team: S3CRET"}, "'****'"),  # secret, and no telling which part
    ({"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer S3CRET,broken"}, "'****'"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "api_token=S3CRET,team=crm,broken S3CRET"}, "'api_token=****,team=crm,****'"),
])
def test_a_malformed_secret_is_never_echoed_in_a_warning(variables: dict[str, str], shown: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        settings = resolve_settings(variables)
    (problem,) = settings.problems
    assert "S3CRET" not in problem.message() and "S3CRET" not in caplog.text
    assert shown in problem.message()


def test_credential_key_and_shown_raw() -> None:
    from otel_crm._internal.settings_parse import credential_key, shown_raw

    assert all(credential_key(k) for k in ("Authorization", "x-api-key", "api_token", "DB_PASSWORD", "OTEL_X_HEADERS"))
    assert not any(credential_key(k) for k in ("team", "deployment.environment.name", "service.version"))
    entry = next(e for e in REGISTRY if e.name == "sampling_ratio")
    assert shown_raw(entry, "1.5x") == "1.5x"  # nothing secret about a ratio: shown as typed


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::1", "[::1]", "metrics.internal", "localhost"])
def test_prometheus_host_accepts_names_and_addresses(host: str) -> None:
    settings = resolve_settings({"OTEL_CRM_PROMETHEUS_HOST": host})
    assert settings.prometheus_host == host and not settings.problems


@pytest.mark.parametrize("host", ["h" * 300, "not a host", "a/b", "-x"])
def test_a_bad_prometheus_host_is_one_line_and_the_default(host: str) -> None:
    """Found by `make reliability`: a 300-character host crashed the endpoint (the host also names a
    rendezvous directory: File name too long)."""
    settings = resolve_settings({"OTEL_CRM_PROMETHEUS_HOST": host})
    assert settings.prometheus_host == "127.0.0.1"
    (problem,) = settings.problems
    assert "OTEL_CRM_PROMETHEUS_HOST" in problem.message()
    with pytest.raises(SettingsError):
        resolve_settings({"OTEL_CRM_PROMETHEUS_HOST": host, "OTEL_CRM_STRICT": "true"})


def test_a_check_that_raises_is_one_line_and_the_default_never_a_crash() -> None:
    """Found by `make reliability`: a 300-character certificate path made the file check raise
    `File name too long` out of resolve_settings, which stopped the host app."""
    settings = resolve_settings({"OTEL_EXPORTER_OTLP_CERTIFICATE": "\x7f" * 3 + "x" * 300,
                                 "OTEL_CRM_PRICING_FILE": "y" * 5000})
    assert {p.variable for p in settings.problems} == {"OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_CRM_PRICING_FILE"}
    entry = next(e for e in REGISTRY if e.name == "prometheus_host")

    def broken(value: object, source: str) -> tuple[object, list[object]]:
        raise RuntimeError("a bug in a check")

    original = entry.check
    object.__setattr__(entry, "check", broken)  # the registry's entries are frozen
    try:
        settings = resolve_settings({"OTEL_CRM_PROMETHEUS_HOST": "metrics.internal"})
        assert settings.prometheus_host == "127.0.0.1"
        assert [p.variable for p in settings.problems] == ["OTEL_CRM_PROMETHEUS_HOST"]
    finally:
        object.__setattr__(entry, "check", original)


@pytest.mark.parametrize("bad", ["u:S3CRET@127.0.0.1:4317", "http://u:S3CRET@[127.0.0.1:4317", "//a:S3CRET@h@x y"])
def test_a_refused_value_never_shows_user_info(bad: str) -> None:
    """Checks report the value as given; the resolver masks it like any value it cannot parse."""
    (problem,) = resolve_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": bad}).problems
    assert "S3CRET" not in problem.message() and "****@" in problem.message()
