from __future__ import annotations

from collections.abc import Iterator

import pytest

from otel_crm._internal import safety
from otel_crm._internal.scrubbing import Scrubber
from otel_crm.testing import CapturedTelemetry


@pytest.fixture
def telemetry(otel_crm_telemetry: CapturedTelemetry) -> CapturedTelemetry:
    """Short name for the plugin's fixture."""
    return otel_crm_telemetry


@pytest.fixture
def scrubber() -> Scrubber:
    return Scrubber()


@pytest.fixture
def no_reraise() -> Iterator[None]:
    """Production behaviour: internal errors swallowed, not re-raised as under pytest."""
    safety.reraise_internal_errors(False)
    try:
        yield
    finally:
        safety.reraise_internal_errors(None)
