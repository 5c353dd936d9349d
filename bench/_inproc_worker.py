"""One arm of the in-process request benchmark (started by bench/bench_requests.py).

Imports the Flask example, calls its `create_app()`, and times GET requests through Flask's test
client — no HTTP server, no socket. Arms b/c start this file under `opentelemetry-instrument`, so
the instrumentations patch Flask before the app is imported, exactly as in production.

    python bench/_inproc_worker.py --out result.json [--requests 4000] [--blocks 8] [--profile p.prof]

Per block it records wall time and process CPU time (all threads, so the exporters' background
work counts) per request. The result goes to --out as JSON (stdout belongs to the app: otel_crm writes JSON logs there).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "flask_crm"))

PATHS = ("/ok", "/leads")
SEED_LEADS = 5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--requests", type=int, default=4000, help="timed requests per path")
    parser.add_argument("--blocks", type=int, default=8, help="timed blocks per path (median)")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up requests per path")
    parser.add_argument("--profile", default="", help="write cProfile stats of the timed loop here")
    parser.add_argument("--disable-logger", action="append", default=[],
                        help="what-if: disable this logger (e.g. otel_crm.access)")
    args = parser.parse_args()
    for name in args.disable_logger:
        logging.getLogger(name).disabled = True

    import app as crm_app  # type: ignore[import-not-found]

    app = crm_app.create_app(services_url="http://127.0.0.1:9")
    client = app.test_client()
    for i in range(SEED_LEADS):
        response = client.post("/leads", json={"name": f"Lead {i}", "email": f"lead{i}@example.com",
                                               "company": f"Company {i}"})
        assert response.status_code == 201, response.status_code
    for path in PATHS:
        for _ in range(args.warmup):
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)

    per_block = max(1, args.requests // args.blocks)
    wall: dict[str, list[float]] = {path: [] for path in PATHS}
    cpu: dict[str, list[float]] = {path: [] for path in PATHS}
    profiler = cProfile.Profile() if args.profile else None
    gc.collect()
    for _ in range(args.blocks):
        for path in PATHS:
            get = client.get
            if profiler is not None:
                profiler.enable()
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(per_block):
                get(path)
            elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started
            if profiler is not None:
                profiler.disable()
            wall[path].append(elapsed / per_block * 1e6)
            cpu[path].append(cpu_elapsed / per_block * 1e6)
    if profiler is not None:
        profiler.dump_stats(args.profile)
    Path(args.out).write_text(json.dumps({"wall_us": wall, "cpu_us": cpu, "per_block": per_block}))


if __name__ == "__main__":
    main()
