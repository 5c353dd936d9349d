"""Startup cost: `opentelemetry-instrument` + a Flask app, otel_crm vs the upstream distro vs bare.

    .venv/bin/python bench/bench_startup.py            # 15 rounds, writes docs/bench-startup.md
    .venv/bin/python bench/bench_startup.py --quick    # 3 rounds, for a smoke test

Each start runs `python -c <app>` (import Flask, build an app with one route, serve one request
through the test client, exit) in a fresh process: bare, under `opentelemetry-instrument` with the
upstream distro and configurator (always-on, OTLP over gRPC), and under it with otel_crm (production
defaults). The exporters point at a closed local port, so the exit flush has nothing to wait for but
the (empty or one-request) queues. The figure is the child's CPU time (user + system, all threads,
from wait4's rusage); arms interleaved, order rotating per round, medians over the rounds.
"""

from __future__ import annotations

import argparse
import compileall
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DOCS, PYTHON, ROOT, cpu_model

GOAL = 1.0  # otel_crm startup <= upstream's (issue 15)
APP = ("import flask\n"
       "app = flask.Flask('startup')\n"
       "app.add_url_rule('/ok', 'ok', lambda: 'ok')\n"
       "assert app.test_client().get('/ok').status_code == 200\n")
INSTRUMENT = str(Path(PYTHON).parent / "opentelemetry-instrument")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def arms(endpoint: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    common = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "startup-bench"}
    upstream = {**common, "OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator",
                "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp"}
    crm = {**common, "OTEL_PYTHON_DISTRO": "otel_crm", "OTEL_PYTHON_CONFIGURATOR": "otel_crm"}
    return {"bare": ([PYTHON, "-c", APP], common),
            "upstream": ([INSTRUMENT, PYTHON, "-c", APP], upstream),
            "otel_crm": ([INSTRUMENT, PYTHON, "-c", APP], crm)}


def cpu_of(argv: list[str], env: dict[str, str]) -> float:
    """CPU seconds (user + system) of one start, read from the child's own rusage."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    process = subprocess.Popen(argv, env={**clean, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        raise SystemExit(f"{argv[0]} failed ({process.returncode}): {stderr[-2000:]}")
    return float(usage.ru_utime + usage.ru_stime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=str(DOCS / "bench-startup.md"))
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 15
    plan = arms(f"http://127.0.0.1:{_closed_port()}")
    names = list(plan)
    if not compileall.compile_dir(str(ROOT / "otel_crm"), quiet=1):
        raise SystemExit("could not byte-compile otel_crm")
    for name in names:  # warm the file system caches and .pyc files once per arm
        cpu_of(*plan[name])
    samples: dict[str, list[float]] = {name: [] for name in names}
    started = time.monotonic()
    for index in range(rounds):
        order = names[index % len(names):] + names[:index % len(names)]
        for name in order:
            samples[name].append(cpu_of(*plan[name]))
    median = {name: statistics.median(values) for name, values in samples.items()}
    ratio = median["otel_crm"] / median["upstream"]
    verdict = "met" if ratio <= GOAL else "missed"
    lines = [
        "# Startup: `opentelemetry-instrument` + a Flask app", "",
        f"<!-- summary: startup CPU otel_crm/upstream = {ratio:.2f}x (goal <= {GOAL:.1f}x: {verdict}); "
        f"otel_crm/bare = {median['otel_crm'] / median['bare']:.2f}x -->", "",
        f"{rounds} rounds, arms interleaved (order rotating), {time.monotonic() - started:.0f} s; "
        f"{cpu_model()}, load average {os.getloadavg()[0]:.1f} at the end. CPU time of the whole "
        "process (user + system, all threads), medians; spread = min–max over the rounds. otel_crm's "
        "modules byte-compiled first, as pip does at install.", "",
        "| arm | CPU ms (median) | spread ms | / upstream |", "|---|---:|---:|---:|"]
    for name in names:
        values = samples[name]
        lines.append(f"| {name} | {median[name] * 1000:.0f} | {min(values) * 1000:.0f}–{max(values) * 1000:.0f} | "
                     f"{median[name] / median['upstream']:.2f} |")
    lines += ["", f"**Startup: otel_crm / upstream = {ratio:.2f}x** (goal ≤ {GOAL:.1f}x: {verdict}).", ""]
    Path(args.output).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
