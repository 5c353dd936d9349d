"""One arm of the in-process request benchmark (started by bench/bench_requests.py).

Builds the bench app (bench/_bench_app.py: the Flask example plus a several-child-span route) and
times GET requests through Flask's test client — no HTTP server, no socket. Instrumented arms start
this file under `opentelemetry-instrument`, so the instrumentations patch Flask before the app is
imported, exactly as in production.

    python bench/_inproc_worker.py --out result.json [--requests 2000] [--blocks 8] [--profile p.prof]
    python bench/_inproc_worker.py --out result.json --counts 0,200,0 --seed 1   # bench/request_instructions.py

Every request carries `X-Tenant-ID` (20 tenants, in turn). Per block it records wall time and
process CPU time (all threads, so the exporters' background work counts) per request; each block
ends with a force_flush of the tracer and logger providers *inside* the timed window, so the
block's spans and log records are exported (over OTLP to the bench's collector) before the clock
stops. The result goes to --out as JSON (stdout belongs to the app: otel_crm writes JSON logs there).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_app import PATHS, SEED_LEADS, TENANTS, create_bench_app, flush_telemetry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per path")
    parser.add_argument("--blocks", type=int, default=8, help="timed blocks per path (median)")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up requests per path")
    parser.add_argument("--profile", default="", help="write cProfile stats of the timed loop here")
    parser.add_argument("--disable-logger", action="append", default=[],
                        help="what-if: disable this logger (e.g. otel_crm.access)")
    parser.add_argument("--counts", default="",
                        help="timed requests of each path (comma-separated, in PATHS order) in one block: "
                             "overrides --requests/--blocks (bench/request_instructions.py differences runs)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random.seed() before the app is built: the same trace IDs (so the same tail-sampling "
                             "decisions) in every run")
    args = parser.parse_args()
    if args.seed is not None:
        random.seed(args.seed)
    for name in args.disable_logger:
        logging.getLogger(name).disabled = True

    app = create_bench_app()
    client = app.test_client()
    for i in range(SEED_LEADS):
        response = client.post("/leads", json={"name": f"Lead {i}", "email": f"lead{i}@example.com",
                                               "company": f"Company {i}"})
        assert response.status_code == 201, response.status_code
    headers = [{"X-Tenant-ID": tenant} for tenant in TENANTS]
    for path in PATHS:
        for i in range(args.warmup):
            response = client.get(path, headers=headers[i % len(headers)])
            assert response.status_code == 200, (path, response.status_code)
    flush_telemetry()

    per_block = max(1, args.requests // args.blocks)
    counts = dict.fromkeys(PATHS, per_block)
    if args.counts:
        counts = dict(zip(PATHS, (int(c) for c in args.counts.split(",")), strict=True))
        args.blocks = 1
    # the header of each request, built before timing (no allocation of the client's in the loop)
    schedules = {path: [headers[i % len(headers)] for i in range(counts[path])] for path in PATHS}
    wall: dict[str, list[float]] = {path: [] for path in PATHS}
    cpu: dict[str, list[float]] = {path: [] for path in PATHS}
    profiler = cProfile.Profile() if args.profile else None
    gc.collect()
    for _ in range(args.blocks):
        for path in PATHS:
            get, schedule = client.get, schedules[path]
            if profiler is not None:
                profiler.enable()
            started, cpu_started = time.perf_counter(), time.process_time()
            for h in schedule:
                get(path, headers=h)
            flush_telemetry()
            elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started
            if profiler is not None:
                profiler.disable()
            wall[path].append(elapsed / max(1, len(schedule)) * 1e6)
            cpu[path].append(cpu_elapsed / max(1, len(schedule)) * 1e6)
    if profiler is not None:
        profiler.dump_stats(args.profile)
    Path(args.out).write_text(json.dumps({"wall_us": wall, "cpu_us": cpu, "per_block": per_block}))


if __name__ == "__main__":
    main()
