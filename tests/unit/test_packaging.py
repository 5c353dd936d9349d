"""The dependency pins stay one coherent OpenTelemetry family, and constraints.txt agrees with them.

Why exact pins: see the comment above `dependencies` in pyproject.toml. `make install-check`
(scripts/install-check.sh) proves the install with stock pip; these tests keep the files honest.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^(opentelemetry-[a-z0-9-]+)(\[[^\]]*\])?\s*([=~<>!]=?[^;,\s]*)")


def _otel_requirements() -> dict[str, set[str]]:
    if sys.version_info < (3, 11):  # the install check also runs these tests on 3.10
        pytest.skip("tomllib is Python 3.11+")
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    found: dict[str, set[str]] = {}
    for line in lines:
        match = _PIN.match(line)
        if match:
            found.setdefault(match.group(1), set()).add(match.group(3))
    return found


def _constraints() -> dict[str, str]:
    pins = {}
    for raw in (ROOT / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip()] = version.strip()
    return pins


def test_every_opentelemetry_requirement_is_an_exact_pin_of_one_family() -> None:
    requirements = _otel_requirements()
    assert "opentelemetry-sdk" in requirements
    versions = set()
    for name, specs in requirements.items():
        assert len(specs) == 1 and next(iter(specs)).startswith("=="), f"{name}: {specs} is not one exact pin"
        versions.add(next(iter(specs))[2:])
    stable = {v for v in versions if "b" not in v}
    beta = {v for v in versions if "b" in v}
    assert len(stable) == 1 and len(beta) == 1, f"mixed families: {sorted(versions)}"
    # SDK 1.45.N pins semantic-conventions 0.66bN (REFERENCE §7): the patch numbers move together.
    (sdk,), (contrib,) = stable, beta
    assert sdk.rsplit(".", 1)[1] == contrib.rsplit("b", 1)[1], f"SDK {sdk} does not match the {contrib} family"


def test_constraints_file_pins_the_same_family() -> None:
    requirements = {name: next(iter(specs))[2:] for name, specs in _otel_requirements().items()}
    constraints = _constraints()
    for name, version in requirements.items():
        got = constraints.get(name)
        assert got == version, f"constraints.txt {name}=={got}, pyproject =={version}"
    family = set(requirements.values())
    stray = {f"{n}=={v}" for n, v in constraints.items() if n.startswith("opentelemetry-") and v not in family}
    assert not stray, f"constraints.txt pins outside the family: {sorted(stray)}"


def test_the_installed_wheel_is_under_test_when_the_install_check_says_so() -> None:
    # scripts/install-check.sh runs the unit tests from outside the clone against the wheel it
    # installed; this makes sure they did not silently import the clone's sources instead.
    if os.environ.get("OTEL_CRM_EXPECT_INSTALLED") != "1":
        pytest.skip("only under scripts/install-check.sh")
    import otel_crm

    assert "site-packages" in Path(otel_crm.__file__).parts, otel_crm.__file__
