"""The README and docs/ stay short, single-sourced and runnable.

What is checked, honestly:
- README.md is at most 12,000 characters.
- No heading and no paragraph appears in two files (README, docs/*.md, collector-config/README.md;
  docs/performance.md is left out: bench/run_all.py assembles it from the docs/bench-*.md files).
- Every relative link points at a file that exists, and its #anchor at a heading in it.
- Every `python` block runs as written (pytest-style ones under pytest), with exporters off.
- Every `json` block parses.
- Every `bash`/`sh` block parses (`bash -n`) and every command in it exists: `make` targets in the
  Makefiles, `otel-crm` subcommands and their options (from `--help`), `pip install` extras in
  pyproject.toml (installed from a path: otel-crm is not on PyPI), other executables on PATH or in
  the venv, `build/…` binaries that mk/collector.mk builds, and the few tools this machine lacks
  (EXTERNAL). Shell blocks are NOT run: they start servers and install packages. The commands
  `make demo` prints are run by tests/e2e/test_demo.py, and the Jaeger queries of docs/traces.md too.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_LIMIT = 12_000
GENERATED = {"docs/performance.md"}
EXTERNAL = {"docker", "helm", "kubectl"}  # documented for hosts that have them; not installed here
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "collector-config" / "README.md"]
CHECKED = [f for f in FILES if str(f.relative_to(ROOT)) not in GENERATED]
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _blocks(language: set[str]) -> list[tuple[str, int, str]]:
    found = []
    for path in FILES:
        for index, match in enumerate(FENCE.finditer(path.read_text())):
            if match.group(2) in language:
                found.append((_name(path), index, textwrap.dedent(match.group(3))))
    return found


def _prose(path: Path) -> str:
    return FENCE.sub("", path.read_text())


def test_the_readme_fits_the_limit() -> None:
    size = len((ROOT / "README.md").read_text())
    assert size <= README_LIMIT, f"README.md is {size} characters (limit {README_LIMIT}): move details to docs/"


def _headings(path: Path) -> list[str]:
    return [m.group(2).strip() for m in re.finditer(r"^(#{1,6}) (.+)$", _prose(path), re.M)]


def test_no_section_exists_twice() -> None:
    where: dict[str, list[str]] = {}
    for path in CHECKED:
        for heading in _headings(path):
            where.setdefault(heading.lower(), []).append(_name(path))
    duplicates = {heading: files for heading, files in where.items() if len(files) > 1}
    assert not duplicates, duplicates


def test_no_paragraph_exists_twice() -> None:
    seen: dict[str, str] = {}
    duplicates = []
    for path in CHECKED:
        for paragraph in re.split(r"\n\s*\n", _prose(path)):
            text = " ".join(paragraph.split())
            if len(text) < 100 or text.startswith(("|", "<!--")):
                continue
            if text in seen:
                duplicates.append(f"{seen[text]} and {_name(path)}: {text[:80]}…")
            seen[text] = _name(path)
    assert not duplicates, duplicates


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_every_relative_link_resolves() -> None:
    broken = []
    for path in FILES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(path)):
            if re.match(r"^[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{_name(path)}: {target}")
            elif anchor and anchor not in {_slug(h) for h in _headings(linked)}:
                broken.append(f"{_name(path)}: {target} (no such heading)")
    assert not broken, broken


PYTHON = _blocks({"python"})


def test_the_docs_have_python_examples() -> None:
    assert len(PYTHON) >= 10


@pytest.mark.parametrize("where,index,code", PYTHON, ids=[f"{w}#{i}" for w, i, _ in PYTHON])
def test_python_block_runs(where: str, index: int, code: str, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "OTEL_CRM_LOG_FORMAT": "none", "OTEL_TRACES_EXPORTER": "none",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", "HOME": str(tmp_path)}
    if "def test_" in code:
        path = tmp_path / f"test_doc_{index}.py"
        path.write_text(code)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)]
    else:
        command = [sys.executable, "-c", code]
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # blocks name the shipped example files
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert result.returncode == 0, f"{where} block {index} failed:\n{code}\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("where,index,text", _blocks({"json"}))
def test_json_block_parses(where: str, index: int, text: str) -> None:
    import json

    json.loads(text)


SHELL = _blocks({"bash", "sh", "shell"})


@cache
def _make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text() + (ROOT / "mk" / "collector.mk").read_text()
    return frozenset(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


@cache
def _cli_help(subcommand: str) -> str | None:
    result = subprocess.run([str(Path(sys.executable).parent / "otel-crm"), subcommand, "--help"],
                            capture_output=True, text=True, timeout=30)
    return result.stdout if result.returncode == 0 else None


@cache
def _extras() -> frozenset[str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return frozenset(re.findall(r"^([a-z]+) = ", section, re.M))


def _commands(script: str) -> list[list[str]]:
    """Simple commands of a script: continuation lines joined, comments dropped, split at ; && || |."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in lexer:
            if token and set(token) <= set(";&|"):
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def _problems(words: list[str]) -> list[str]:
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]  # VAR=value prefixes
    if not words:
        return []
    program, args = words[0], words[1:]
    name = Path(program).name
    if name == "make":
        targets = [t for i, t in enumerate(args) if not t.startswith("-") and "=" not in t
                   and (i == 0 or args[i - 1] not in ("-C", "-f"))]
        return [f"make target {t!r} does not exist" for t in targets if t not in _make_targets()]
    if name == "otel-crm":
        help_text = _cli_help(args[0]) if args else None
        if help_text is None:
            return [f"otel-crm has no subcommand {args[:1]}"]
        return [f"otel-crm {args[0]} has no option {a}" for a in args[1:]
                if a.startswith("--") and not re.search(rf"{re.escape(a)}\b(?!-)", help_text)]
    if name == "pip" and args[:1] == ["install"]:
        problems = []
        for spec in args[1:]:
            match = re.match(r"^(.+)\[([a-z,]+)\]$", spec)
            if match:
                if not match.group(1).startswith(("/", ".", "~")):
                    problems.append(f"pip install {spec}: otel_crm is installed from a path, not from PyPI")
                problems += [f"no extra {e!r} in pyproject.toml" for e in match.group(2).split(",")
                             if e not in _extras()]
        return problems
    if program.startswith("build/"):
        return [] if f"build/{name}" in "build/otelcol-crm build/jaeger build/telemetrygen build/promtool" else [
            f"{program} is not built by mk/collector.mk"]
    if name in EXTERNAL or shutil.which(program) or (Path(sys.executable).parent / program).exists():
        return []
    builtin = subprocess.run(["bash", "-c", f"type -t {shlex.quote(program)}"], capture_output=True, text=True)
    return [] if builtin.stdout.strip() in {"builtin", "keyword"} else [f"command {program!r} not found"]


def test_shell_blocks_exist() -> None:
    assert len(SHELL) >= 5


@pytest.mark.parametrize("where,index,script", SHELL, ids=[f"{w}#{i}" for w, i, _ in SHELL])
def test_shell_block_parses_and_its_commands_exist(where: str, index: int, script: str) -> None:
    parsed = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert parsed.returncode == 0, f"{where} block {index}: {parsed.stderr}"
    problems = [p for words in _commands(script) for p in _problems(words)]
    assert not problems, f"{where} block {index}:\n{script}\n{problems}"
