"""Which OpenTelemetry family can otel_crm move to? Asks the package index through pip.

    python scripts/otel_family.py

pyproject.toml pins one family exactly: SDK 1.X.N with the 0.YbN packages (see the comment there).
A newer patch family is usable only when *every* package we pin exists in it; this prints the
newest complete one and, for the newer incomplete ones, what is missing. Informational: it never
fails the build (exit 0), because an upstream release must not break CI.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
_PIN = re.compile(r"^(opentelemetry-[a-z0-9-]+)\s*==\s*([0-9][^;,\s]*)")


def pinned() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {m.group(1): m.group(2) for m in map(_PIN.match, lines) if m}


def available(name: str) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "--pre", name],
                         capture_output=True, text=True, timeout=60, check=False).stdout
    match = re.search(r"Available versions: (.*)", out)
    return {v.strip() for v in match.group(1).split(",")} if match else set()


def main() -> int:
    pins = pinned()
    stable = next(v for v in pins.values() if "b" not in v)
    beta = next(v for v in pins.values() if "b" in v)
    major, patch = stable.rsplit(".", 1)
    beta_base = beta.rsplit("b", 1)[0]
    versions = {name: available(name) for name in pins}
    newest, report = int(patch), []
    for n in range(int(patch), int(patch) + 10):
        wanted = {name: (f"{major}.{n}" if "b" not in v else f"{beta_base}b{n}") for name, v in pins.items()}
        missing = sorted(name for name, version in wanted.items() if version not in versions[name])
        if not missing:
            newest = n
        elif len(missing) < len(pins):
            report.append(f"  {major}.{n}/{beta_base}b{n} lacks: {', '.join(missing)}")
    print(f"otel family pinned: {stable}/{beta}; newest complete on the index: {major}.{newest}/{beta_base}b{newest}")
    for line in report:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
