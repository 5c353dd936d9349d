"""How much slower the app's own code runs next to each arm's telemetry; prints, writes nothing.

    .venv/bin/python bench/interference_micro.py [--rounds 5] [--iterations 300]

The same piece of pure app code (building two SQLAlchemy statements of the bench app and their
cache keys: no instrumented call, no span, no I/O) is timed in each arm's process in two ways:
alone, in a tight loop, and between requests (one `GET /report` through Flask's test client, with
the arm's telemetry, before each timed piece, as a server interleaves requests). Alone, every arm
runs the same code at the same speed; between requests, what the request ran in between has evicted
part of the piece's code and data from the CPU caches. The difference between arms is that eviction:
the telemetry's cost that no profile of the telemetry's own functions shows, because it is paid in
the app's functions. Thread CPU time; the garbage collector is held off while a piece runs (a
collection the request's allocations made due is the request's). Each arm runs `--rounds` times,
alternating, under `opentelemetry-instrument` for the instrumented arms (exporters `none`: nothing
to export, so export threads do not compete).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _common import clean_env  # noqa: E402
from bench_requests import CRM_ENV, INSTRUMENT, UPSTREAM_ENV  # noqa: E402 - the request bench's arms

_QUIET = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
ARMS = {"bare": None, "upstream": {**UPSTREAM_ENV, **_QUIET}, "otel_crm": {**CRM_ENV, **_QUIET}}


def worker(iterations: int, result: str) -> None:
    """One arm's process: µs of thread CPU time per piece, alone and between requests (medians of 7
    blocks), written as JSON to `result` (stdout and stderr belong to the app and its telemetry).
    The collector is off while a piece runs: a collection the request's allocations are due is not
    the piece's (it runs at the next allocation after the piece, in the request)."""
    import _bench_app
    from sqlalchemy import func, select

    app = _bench_app.create_bench_app()
    lead = _bench_app.crm_app.Lead
    client = app.test_client()
    headers = {"X-Tenant-ID": "tenant-01"}

    def piece() -> None:
        select(func.count(lead.id)).where(lead.status == "new")._generate_cache_key()
        select(lead).order_by(lead.id.desc()).limit(3)._generate_cache_key()

    def block(between_requests: bool) -> float:
        spent = 0.0
        for _ in range(iterations):
            if between_requests:
                client.get("/report", headers=headers)
            gc.disable()
            started = time.thread_time()
            piece()
            spent += time.thread_time() - started
            gc.enable()
        return spent / iterations * 1e6

    for _ in range(iterations):  # warm-up: every path specialised, every cache filled
        client.get("/report", headers=headers)
        piece()
    alone = statistics.median(block(False) for _ in range(7))
    between = statistics.median(block(True) for _ in range(7))
    Path(result).write_text(json.dumps({"alone": alone, "between": between}), encoding="utf-8")


def run_arm(name: str, iterations: int) -> dict[str, float]:
    env = clean_env({"CRM_SERVICES_URL": "http://127.0.0.1:9", "OTEL_SERVICE_NAME": "interference"})
    extra = ARMS[name]
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        argv = [sys.executable, __file__, "--worker", "--iterations", str(iterations), "--result", str(out)]
        if extra is not None:
            env.update(extra)
            argv = [INSTRUMENT, *argv]
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       cwd=str(BENCH.parent))
        result: dict[str, float] = json.loads(out.read_text(encoding="utf-8"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.iterations, args.result)
        return
    seen: dict[str, list[dict[str, float]]] = {name: [] for name in ARMS}
    for index in range(args.rounds):
        names = list(ARMS) if index % 2 == 0 else list(reversed(ARMS))
        for name in names:
            seen[name].append(run_arm(name, args.iterations))
    # Per round, each arm against the bare arm of the same round (they ran back to back).
    print(f"µs per piece of app code, medians over {args.rounds} rounds (min-max)")
    print(f"  {'arm':<10} {'alone':>22} {'between requests':>22} {'between, / bare':>22}")
    for name, results in seen.items():
        alone = [r["alone"] for r in results]
        between = [r["between"] for r in results]
        ratios = [r["between"] / b["between"] for r, b in zip(results, seen["bare"], strict=True)]
        print(f"  {name:<10} {_spread(alone, '.0f'):>22} {_spread(between, '.0f'):>22} {_spread(ratios, '.2f'):>22}")


def _spread(values: list[float], form: str) -> str:
    return f"{statistics.median(values):{form}} ({min(values):{form}}-{max(values):{form}})"


if __name__ == "__main__":
    main()
