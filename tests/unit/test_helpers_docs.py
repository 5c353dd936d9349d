"""Every Python example in docs/helpers.md runs as written (pytest-style ones under pytest)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Blocks inside list items are indented: run them as written at the left margin.
BLOCKS = [textwrap.dedent(block)
          for block in re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "helpers.md").read_text(), re.S)]


def test_the_helpers_guide_has_examples() -> None:
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_helpers_guide_example_runs(index: int, tmp_path: Path) -> None:
    code = BLOCKS[index]
    env = {"PATH": "/usr/bin:/bin", "OTEL_CRM_LOG_FORMAT": "none", "OTEL_TRACES_EXPORTER": "none",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", "HOME": str(tmp_path)}
    if "def test_" in code:
        path = tmp_path / f"test_helpers_doc_{index}.py"
        path.write_text(code)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)]
    else:
        command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert result.returncode == 0, f"docs/helpers.md example {index} failed:\n{code}\n{result.stdout}\n{result.stderr}"


def test_the_misuse_example_goes_on_and_logs_one_line(tmp_path: Path) -> None:
    (code,) = [block for block in BLOCKS if 'set_records("25")' in block]
    env = {"PATH": "/usr/bin:/bin", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
           "OTEL_LOGS_EXPORTER": "none", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env=env)
    assert result.returncode == 0 and "sync finished" in result.stdout
    lines = [line for line in result.stderr.splitlines() if "internal error in helpers.connector" in line]
    assert len(lines) == 1, result.stderr
    assert "set_records(count=str of 2 characters) at <string>:4: expected a whole number" in lines[0]
    assert "'25'" not in result.stderr and '"25"' not in result.stderr, "the value itself is never logged"
