from __future__ import annotations

import pytest

from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.startup_report import sanitized_endpoint, startup_summary, tenant_source


def test_development_profile_turns_the_report_on_and_production_leaves_it_off() -> None:
    assert resolve_settings({"OTEL_CRM_ENVIRONMENT": "development"}).startup_report is True
    assert resolve_settings({}).startup_report is False
    assert resolve_settings({"OTEL_CRM_STARTUP_REPORT": "true"}).startup_report is True
    assert resolve_settings({"OTEL_CRM_ENVIRONMENT": "dev", "OTEL_CRM_STARTUP_REPORT": "false"}).startup_report is False


def test_the_line_names_every_promised_fact() -> None:
    settings = resolve_settings({"OTEL_SERVICE_NAME": "crm-api", "OTEL_CRM_ENVIRONMENT": "development",
                                 "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    line = startup_summary(settings)
    assert line == ("otel_crm: service=crm-api environment=development profile=development "
                    "endpoint=http://127.0.0.1:4317 protocol=grpc sampling=tail ratio=1 "
                    "tenant=header:X-Tenant-ID scrubbing=redact")
    assert "\n" not in line


def test_production_defaults_and_http_protocol() -> None:
    settings = resolve_settings({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                                 "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otlp.example.com"})
    line = startup_summary(settings)
    assert "environment=production profile=production" in line
    assert "endpoint=https://otlp.example.com/v1/traces protocol=http/protobuf" in line
    assert "sampling=tail ratio=0.1" in line


@pytest.mark.parametrize("mode,expected", [("head", "sampling=head ratio=0.25"), ("collector", "sampling=collector"),
                                           ("off", "sampling=off")])
def test_sampling_mode_and_ratio(mode: str, expected: str) -> None:
    settings = resolve_settings({"OTEL_CRM_SAMPLING_MODE": mode, "OTEL_CRM_SAMPLING_RATIO": "0.25"})
    assert f" {expected} " in startup_summary(settings)


def test_nothing_secret_is_printed() -> None:
    settings = resolve_settings({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://alice:hunter2@otlp.example.com:4317/?api_key=k3y#frag",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cret",
        "OTEL_CRM_SCRUB_SALT": "pepper", "OTEL_CRM_TENANT_ID": "acme-dedicated",
        "OTEL_CRM_SCRUB_MODE": "hash",
    })
    line = startup_summary(settings)
    for secret in ("alice", "hunter2", "k3y", "frag", "s3cret", "Bearer", "pepper", "acme-dedicated"):
        assert secret not in line
    assert "endpoint=https://otlp.example.com:4317/ " in line
    assert "tenant=header:X-Tenant-ID,resource" in line and "scrubbing=hash" in line


def test_tenant_source_in_precedence_order() -> None:
    settings = resolve_settings({"OTEL_CRM_TENANT_RESOLVER": "mysite.tenancy:tenant_for",
                                 "OTEL_CRM_TRUST_INCOMING_BAGGAGE": "true"})
    assert tenant_source(settings) == "header:X-Tenant-ID,resolver:mysite.tenancy:tenant_for,baggage"
    assert tenant_source(resolve_settings({}, tenant_header="")) == "none"


def test_a_hostile_service_name_stays_one_token() -> None:
    settings = resolve_settings({"OTEL_SERVICE_NAME": "crm api\n\x1b[31mred"})
    line = startup_summary(settings)
    assert "\n" not in line and "\x1b" not in line and "service=crm_api_[31mred " in line


def test_no_otlp_exporter_and_disabled() -> None:
    settings = resolve_settings({"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none",
                                 "OTEL_LOGS_EXPORTER": "none"})
    assert " endpoint=none " in startup_summary(settings)
    assert startup_summary(resolve_settings({"OTEL_SDK_DISABLED": "true", "OTEL_SERVICE_NAME": "w"})) == \
        "otel_crm: disabled service=w"


@pytest.mark.parametrize("raw,expected", [
    ("http://u:p@collector:4317", "http://collector:4317"),
    ("collector:4317", "collector:4317"),
    ("http://[::1]:4317/x?token=1", "http://[::1]:4317/x"),
    ("http://collector:notaport", "<invalid endpoint>"),
    ("", ""),
])
def test_sanitized_endpoint(raw: str, expected: str) -> None:
    assert sanitized_endpoint(raw) == expected
