from __future__ import annotations

import pytest

from otel_crm.testing import CapturedTelemetry


@pytest.fixture
def telemetry(otel_crm_telemetry: CapturedTelemetry) -> CapturedTelemetry:
    """Short name for the plugin's fixture."""
    return otel_crm_telemetry
