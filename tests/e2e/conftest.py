"""e2e fixtures: real otelcol-crm and Jaeger v2 on loopback (no mocks).

Binaries come from `make e2e-prereqs` (build/otelcol-crm, build/jaeger,
build/promtool); a missing one FAILS the test with the make target to run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import JaegerProc


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: real collector and real Jaeger on loopback")


@pytest.fixture(scope="session")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JaegerProc]:
    """One Jaeger for the session; tests keep apart by unique service names."""
    log_dir: Path = tmp_path_factory.mktemp("jaeger")
    proc = JaegerProc(log_dir).start()
    yield proc
    proc.stop()
