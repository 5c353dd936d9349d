"""The shipped configs are valid for the built binaries; the alert rules pass their unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.stack import CONFIGS, binary, run

pytestmark = pytest.mark.e2e

VALIDATE_ENV = {"LB_BACKENDS": "[127.0.0.1:4417,127.0.0.1:4517]", "OTELCOL_LOGS_FILE": "/dev/null"}
COLLECTOR_CONFIGS = ["otelcol.yaml", "gateway/loadbalancer.yaml", "gateway/sampler.yaml"]


@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
def test_shipped_collector_config_validates(name: str) -> None:
    result = run([str(binary("OTELCOL_BIN", "otelcol-crm", "collector")), "validate", "--config",
                  str(CONFIGS / name)], VALIDATE_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("breakage", [
    ("decision_wait: ${env:", "decision_wiat: ${env:"),  # misspelt key
    ("exporters: [otlp_grpc/jaeger]", "exporters: [otlp_grpc/nowhere]"),  # undefined component
    ("limit_mib: ${env:OTELCOL_MEMORY_LIMIT_MIB:-1024}", "limit_mib: lots"),  # wrong type
])
def test_broken_copy_fails_validation(tmp_path: Path, breakage: tuple[str, str]) -> None:
    good = (CONFIGS / "otelcol.yaml").read_text()
    assert breakage[0] in good
    broken = tmp_path / "otelcol.yaml"
    broken.write_text(good.replace(breakage[0], breakage[1]))
    result = run([str(binary("OTELCOL_BIN", "otelcol-crm", "collector")), "validate", "--config", str(broken)],
                 VALIDATE_ENV)
    assert result.returncode != 0, f"validate accepted a broken config ({breakage[1]})"


def test_jaeger_config_validates() -> None:
    result = run([str(binary("JAEGER_BIN", "jaeger", "jaeger")), "validate", "--config", str(CONFIGS / "jaeger.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests_pass() -> None:
    promtool = str(binary("PROMTOOL", "promtool", "promtool"))
    check = run([promtool, "check", "rules", str(CONFIGS / "prometheus" / "alerts.yaml")])
    assert check.returncode == 0, check.stdout + check.stderr
    # promtool resolves rule_files relative to the working directory.
    tests = subprocess.run([promtool, "test", "rules", "alerts.test.yaml"], cwd=CONFIGS / "prometheus",
                           capture_output=True, text=True, timeout=120, check=False)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "SUCCESS" in tests.stdout + tests.stderr
