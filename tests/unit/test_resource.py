from __future__ import annotations

import pytest

from otel_crm._internal.resource import create_resource
from otel_crm._internal.settings import resolve_settings


def test_resource_has_service_environment_and_distro() -> None:
    resource = create_resource(resolve_settings({"OTEL_SERVICE_NAME": "crm-api",
                                                 "OTEL_CRM_SERVICE_VERSION": "1.2.3",
                                                 "OTEL_CRM_ENVIRONMENT": "staging"}))
    attributes = resource.attributes
    assert attributes["service.name"] == "crm-api" and attributes["service.version"] == "1.2.3"
    assert attributes["deployment.environment.name"] == "staging"
    assert attributes["telemetry.distro.name"] == "otel_crm"
    assert attributes["telemetry.sdk.language"] == "python"
    assert attributes["host.name"] and attributes["process.pid"]
    assert len(str(attributes["service.instance.id"])) == 36


def test_otel_resource_attributes_are_honoured_and_explicit_settings_win() -> None:
    settings = resolve_settings({"OTEL_RESOURCE_ATTRIBUTES":
                                 "service.name=from-attrs,team=crm,deployment.environment=old"})
    attributes = create_resource(settings).attributes
    assert attributes["service.name"] == "from-attrs" and attributes["team"] == "crm"
    assert "deployment.environment" not in attributes
    assert attributes["deployment.environment.name"] == "old"
    explicit = create_resource(resolve_settings({"OTEL_RESOURCE_ATTRIBUTES": "service.name=a"},
                                                service_name="b"))
    assert explicit.attributes["service.name"] == "b"


def test_single_tenant_deployment_puts_the_tenant_on_the_resource() -> None:
    attributes = create_resource(resolve_settings({"OTEL_CRM_TENANT_ID": "acme",
                                                   "OTEL_CRM_TENANT_TIER": "enterprise"})).attributes
    assert attributes["crm.tenant.id"] == "acme" and attributes["crm.tenant.tier"] == "enterprise"
    assert "crm.tenant.id" not in create_resource(resolve_settings({})).attributes


def test_no_cloud_detector_runs() -> None:
    attributes = create_resource(resolve_settings({})).attributes
    assert not any(key.startswith(("cloud.", "aws.", "gcp.", "azure.")) for key in attributes)


def test_host_arch_uses_the_registry_values(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert create_resource(resolve_settings({})).attributes["host.arch"] == "amd64"
    given = resolve_settings({"OTEL_RESOURCE_ATTRIBUTES": "host.arch=aarch64"})
    assert create_resource(given).attributes["host.arch"] == "arm64", "a user-given spelling is mapped too"


@pytest.mark.parametrize("mode", ["tail", "head", "off", "collector"])
def test_the_sampling_mode_is_on_the_resource_and_the_collector_keeps_what_was_decided_in_process(mode: str) -> None:
    """The bundled collector's `decided-in-process` policy matches this resource attribute: a trace a
    service already sampled must not be sampled again (10% of 10%), and `off` must mean everything."""
    from otel_crm._internal.collector_policy import DECIDED_IN_PROCESS, collector_policies

    resource = create_resource(resolve_settings({"OTEL_CRM_SAMPLING_MODE": mode}))
    assert resource.attributes["crm.sampling.mode"] == mode
    policy = next(p for _, p in collector_policies((), ratio=0.1, slow_seconds=2.0)
                  if p["name"] == "decided-in-process")
    assert policy["string_attribute"] == {"key": "crm.sampling.mode", "values": list(DECIDED_IN_PROCESS)}
    assert (mode in policy["string_attribute"]["values"]) == (mode != "collector")
