#!/usr/bin/env python3
"""Build the folder the OpenTelemetry Operator copies into Python pods (`/autoinstrumentation`).

    python deploy/operator/build_autoinstrumentation.py /autoinstrumentation

Used by deploy/operator/Dockerfile and, unchanged, by tests/integration/test_operator_injection.py,
so the folder the test injects is the folder the image ships. Standard library only.

What it does, in the layout the operator's Python injection expects (docs/kubernetes.md cites the
operator source this follows):
1. `pip install --target TARGET` of otel_crm (this checkout), its dependencies and the
   instrumentations in requirements.txt, pinned by constraints.txt: one pip call, because pip
   --target skips a top-level directory that already exists (`opentelemetry/` is shared by all).
2. Replaces opentelemetry-instrumentation's auto_instrumentation/sitecustomize.py (the file the
   operator's PYTHONPATH makes Python import at startup) by deploy/operator/sitecustomize.py, which
   selects otel_crm before calling the same initialize(). Refuses if the upstream file changed.
3. Refuses a folder that would shadow the application's own frameworks (the folder comes before
   the app's site-packages on sys.path).
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

__all__ = ["FRAMEWORKS", "SITECUSTOMIZE", "UPSTREAM_SITECUSTOMIZE_CODE", "build", "check_folder",
           "install_sitecustomize", "main"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SITECUSTOMIZE = Path("opentelemetry/instrumentation/auto_instrumentation/sitecustomize.py")
# The statements of opentelemetry-instrumentation's sitecustomize.py (0.66b1; unchanged for years).
UPSTREAM_SITECUSTOMIZE_CODE = ("from opentelemetry.instrumentation.auto_instrumentation import initialize",
                               "initialize()")
# Top-level packages that belong to the application, never to the injected folder.
FRAMEWORKS = ("flask", "werkzeug", "jinja2", "django", "sqlalchemy", "httpx", "starlette", "fastapi")


def _statements(source: str) -> tuple[str, ...]:
    return tuple(ast.unparse(node) for node in ast.parse(source).body)


def build(target: Path, *, project: Path = ROOT, extra: tuple[str, ...] = (), quiet: bool = False) -> None:
    if target.exists() and any(target.iterdir()):
        raise SystemExit(f"{target} is not empty: pip --target would skip the directories it already has")
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--target", str(target),
               "-c", str(project / "constraints.txt"), "-r", str(HERE / "requirements.txt"), str(project), *extra]
    subprocess.run([*command, *(["--quiet"] if quiet else [])], check=True)

    install_sitecustomize(target)
    check_folder(target)


def install_sitecustomize(target: Path) -> None:
    upstream = target / SITECUSTOMIZE
    if not upstream.is_file():
        raise SystemExit(f"{upstream} is missing: the operator's PYTHONPATH would find no sitecustomize")
    if _statements(upstream.read_text()) != UPSTREAM_SITECUSTOMIZE_CODE:
        raise SystemExit(f"{upstream} is no longer upstream's two-line file: review "
                         "deploy/operator/sitecustomize.py against it before replacing it")
    upstream.write_text((HERE / "sitecustomize.py").read_text())
    for stale in upstream.parent.glob("__pycache__/sitecustomize.*.pyc"):
        stale.unlink()


def check_folder(target: Path) -> None:
    shadowing = sorted(name for name in FRAMEWORKS if (target / name).exists())
    if shadowing:
        raise SystemExit(f"{target} contains {shadowing}: they would shadow the application's own copies")
    if not (target / "otel_crm").is_dir():
        raise SystemExit(f"{target}/otel_crm is missing")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path, help="the folder to create, e.g. /autoinstrumentation")
    parser.add_argument("--project", type=Path, default=ROOT, help="the otel_crm checkout to install")
    parser.add_argument("--extra", action="append", default=[],
                        help="one more requirement to install in the same pip call (tests use it)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    build(args.target, project=args.project, extra=tuple(args.extra), quiet=args.quiet)


if __name__ == "__main__":
    main()
