"""scripts/build-tools.sh tells a new user what is wrong with the toolchain in one line, and says what
it is doing while it waits on another build's lock. Real script, real Go, real module proxy (for
the go.mod files the required version is read from); nothing is built here."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import subprocess
import time
from pathlib import Path

from tests.support.processes import ROOT, wait_until

SCRIPT = ROOT / "scripts" / "build-tools.sh"
MANIFEST = (ROOT / "collector-config" / "builder-config.yaml").read_text()


def _run(cache: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OTEL_CRM_CACHE": str(cache), "BUILD_DIR": str(cache / "build"), **env})


def test_missing_go_is_one_line_naming_the_version_the_pinned_modules_need(tmp_path: Path) -> None:
    result = _run(tmp_path, "collector", GO="/nonexistent/go")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    match = re.search(r"Go is missing: the pinned collector \((\S+)@(\S+)\) needs Go (\d+\.\d+(?:\.\d+)?) or newer",
                      lines[0])
    assert match, lines[0]
    module, version, need = match.groups()
    assert module == "go.opentelemetry.io/collector/cmd/builder" or f"{module} {version}" in MANIFEST
    # The README and docs/development.md state the same version a new user will be told.
    assert f"**Go ≥ {need}**" in (ROOT / "README.md").read_text()
    assert f"needs Go {need}" in (ROOT / "docs" / "development.md").read_text()


def test_too_old_go_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "go"
    fake.write_text('#!/bin/sh\n[ "$1 $2" = "env GOVERSION" ] && { echo go1.22.5; exit 0; }\nexit 3\n')
    fake.chmod(0o755)
    result = _run(tmp_path, "jaeger", GO=str(fake))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(r"Go 1\.22\.5 is too old: the pinned jaeger \(github\.com/jaegertracing/jaeger@v[\d.]+\) "
                     r"needs Go \d+\.\d+(\.\d+)? or newer", lines[0]), lines[0]


def _telemetrygen_dir(cache: Path) -> Path:
    """The cache directory build-tools.sh uses for telemetrygen (same hash as its hash_of)."""
    pin = re.search(r'TELEMETRYGEN_VERSION="\$\{TELEMETRYGEN_VERSION:-(v[^}]+)\}"', SCRIPT.read_text())
    assert pin
    modver = f"github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@{pin.group(1)}"
    go = os.environ.get("GO") or next(p for p in ("/usr/local/go/bin/go", "go") if p == "go" or Path(p).exists())
    facts = subprocess.run([go, "env", "GOVERSION", "GOOS", "GOARCH"], capture_output=True, text=True,
                           check=True).stdout
    digest = hashlib.sha256((modver + "\n" + facts).encode()).hexdigest()[:12]
    return cache / f"telemetrygen-{digest}"


def test_waiting_on_another_builds_lock_says_so_and_keeps_saying_so(tmp_path: Path) -> None:
    target = _telemetrygen_dir(tmp_path)
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.Popen(["bash", str(SCRIPT), "telemetrygen"], stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OTEL_CRM_CACHE": str(tmp_path), "BUILD_DIR": str(tmp_path / "b"),
                                     "BUILD_PROGRESS_SECONDS": "1"})
        assert proc.stderr is not None
        seen: list[str] = []

        def saw(text: str) -> bool:
            while not any(text in line for line in seen):
                line = proc.stderr.readline()  # type: ignore[union-attr]
                if not line:
                    return False
                seen.append(line)
            return True

        wait_until(lambda: saw("waiting for another build of " + target.name), 60, "the waiting line")
        started = time.monotonic()
        wait_until(lambda: saw("still waiting for the other build of " + target.name), 30, "a progress line")
        assert time.monotonic() - started < 10
        # The other build "publishes" its binary and releases the lock: this one reuses it, builds nothing.
        target.mkdir()
        (target / "telemetrygen").write_text("#!/bin/sh\n")
        (target / "telemetrygen").chmod(0o755)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(seen) + rest
    assert "finished after" in rest and "go install" not in "".join(seen) + rest
    assert (tmp_path / "b" / "telemetrygen").resolve() == (target / "telemetrygen").resolve()
