"""Every Python example in the README runs as written (pytest-style ones under pytest)."""

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
          for block in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)]
RUNNABLE = BLOCKS


def test_the_readme_has_examples() -> None:
    assert len(RUNNABLE) >= 6


@pytest.mark.parametrize("index", range(len(RUNNABLE)))
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    code = RUNNABLE[index]
    env = {"PATH": "/usr/bin:/bin", "OTEL_CRM_LOG_FORMAT": "none", "OTEL_TRACES_EXPORTER": "none",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", "HOME": str(tmp_path)}
    if "def test_" in code:
        path = tmp_path / f"test_readme_{index}.py"
        path.write_text(code)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)]
    else:
        command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert result.returncode == 0, f"README example {index} failed:\n{code}\n{result.stdout}\n{result.stderr}"
