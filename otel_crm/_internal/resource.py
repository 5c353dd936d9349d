"""The resource: who is sending. Cheap detectors only — nothing that calls cloud metadata."""

from __future__ import annotations

import os
import platform
import socket
import sys
import uuid

from opentelemetry.sdk.resources import Resource
from opentelemetry.util.types import AttributeValue

from otel_crm._internal import semconv
from otel_crm._internal.corrections import correct_resource_attributes, host_arch
from otel_crm._internal.settings import Settings

__all__ = ["DISTRO_NAME", "create_resource", "distro_version"]

DISTRO_NAME = "otel_crm"


def distro_version() -> str:
    from otel_crm import __version__  # the package imports this module: read its version when asked

    return __version__


def create_resource(settings: Settings) -> Resource:
    """Resource from settings. Precedence: explicit otel_crm settings > OTEL_RESOURCE_ATTRIBUTES >
    detected host/process facts."""
    from opentelemetry.sdk.version import __version__ as sdk_version

    attributes: dict[str, AttributeValue] = {
        semconv.TELEMETRY_SDK_NAME: "opentelemetry",
        semconv.TELEMETRY_SDK_LANGUAGE: "python",
        semconv.TELEMETRY_SDK_VERSION: sdk_version,
        semconv.HOST_NAME: socket.gethostname(),
        semconv.HOST_ARCH: host_arch(platform.machine()),  # the registry's values: amd64, not x86_64
        semconv.OS_TYPE: sys.platform if sys.platform != "win32" else "windows",
        semconv.PROCESS_PID: os.getpid(),
        semconv.PROCESS_RUNTIME_NAME: sys.implementation.name,
        semconv.PROCESS_RUNTIME_VERSION: platform.python_version(),
        semconv.PROCESS_EXECUTABLE_NAME: os.path.basename(sys.executable),
    }
    attributes.update(settings.resource_attributes)
    attributes = correct_resource_attributes(attributes) or attributes  # a user's x86_64 too
    explicit = settings.explicit
    service_name = settings.service_name
    if "service_name" not in explicit and semconv.SERVICE_NAME in settings.resource_attributes:
        service_name = settings.resource_attributes[semconv.SERVICE_NAME]
    attributes[semconv.SERVICE_NAME] = service_name
    for key, value in ((semconv.SERVICE_VERSION, settings.service_version),
                       (semconv.SERVICE_NAMESPACE, settings.service_namespace),
                       (semconv.CRM_TENANT_ID, settings.tenant_id),
                       (semconv.CRM_TENANT_TIER, settings.tenant_tier)):
        if value:
            attributes[key] = value
    attributes[semconv.SERVICE_INSTANCE_ID] = (settings.service_instance_id
                                               or str(attributes.get(semconv.SERVICE_INSTANCE_ID, ""))
                                               or str(uuid.uuid4()))
    attributes[semconv.DEPLOYMENT_ENVIRONMENT_NAME] = settings.environment
    # The bundled collector keeps every trace whose sampling was decided in process (policy
    # `decided-in-process`) instead of sampling it at its baseline again: 10% of 10% = 1%.
    attributes[semconv.CRM_SAMPLING_MODE] = settings.sampling_mode
    # The deprecated key would make backends show two environments.
    attributes.pop(semconv.DEPLOYMENT_ENVIRONMENT, None)
    attributes[semconv.TELEMETRY_DISTRO_NAME] = DISTRO_NAME
    attributes[semconv.TELEMETRY_DISTRO_VERSION] = distro_version()
    return Resource(attributes)
