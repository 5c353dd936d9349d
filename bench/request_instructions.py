"""Instructions executed per request (valgrind's cachegrind): a calm, deterministic companion to the
in-process CPU figures of bench/bench_requests.py, for the same arms and the same worker.

    .venv/bin/python bench/request_instructions.py                  # ~30 min, writes docs/bench-request-instructions.md
    .venv/bin/python bench/request_instructions.py --quick          # bare + otel_crm-grpc, prints only
    .venv/bin/python bench/request_instructions.py --baseline before=<ref>   # + otel_crm-grpc as of a ref
    # knobs: --arms a,b --requests N --warmup N --repeat R --jobs J --output PATH

Each run is bench/_inproc_worker.py (Flask test client in a loop, `X-Tenant-ID` from 20 tenants)
under `opentelemetry-instrument` for the instrumented arms, exactly as bench_requests.py starts it,
except that valgrind is put between the two: `opentelemetry-instrument valgrind --tool=cachegrind
python worker.py`. opentelemetry-instrument sets PYTHONPATH and exec()s its command (found on PATH),
so valgrind runs only the Python that serves the requests (no --trace-children needed) and its
`I refs` are that process's instructions, all threads (export threads included), user space only.

Differencing, so that startup, warm-up and shutdown cancel: per arm one run with no timed request
(`--counts 0,0,0`) and one run per path with N timed requests of that path only (`--counts N,0,0`,
...), every run with the same warm-up and ending with the same force_flush; Ir per request of a path
= (Ir(path run) - Ir(base run)) / N, and `mix` = the mean of the three paths (bench_requests.py's mix).

Determinism: each arm runs once natively first (its .pyc files written: no measured run compiles
source), `random` is seeded (the same trace IDs, so the same spans are tail-sampled and
exported in every run), PYTHONHASHSEED=0, and the periodic exports are pushed past the run
(OTEL_BSP_SCHEDULE_DELAY and OTEL_BLRP_SCHEDULE_DELAY 600 s, OTEL_METRIC_EXPORT_INTERVAL 3600 s):
under valgrind a run lasts ~20x longer, so a 1 s / 5 s / 60 s timer would fire 20x more often per
request than in production and at varying points. Every span and log record is still exported,
inside the difference, by the batch-size trigger or the force_flush that ends the window (as in the
CPU bench); metrics are exported at shutdown, which cancels.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DOCS, PYTHON, REQUEST_PATHS, ROOT, NullCollector, machine_summary
from bench_requests import WORKER, Arm, argv_for, arm_env, arms, baseline_arms, versions

__all__ = ["main"]

PATHS = REQUEST_PATHS
DEFAULT_ARMS = ("bare", "floor", "upstream-grpc", "upstream-http", "otel_crm-grpc", "otel_crm-http")
VALGRIND = ("valgrind", "--tool=cachegrind", "--cache-sim=no")
# Periodic work pushed past any run (see the module docstring); seconds-long timers under valgrind
# would otherwise fire a varying number of times per run.
QUIET_TIMERS = {"OTEL_BSP_SCHEDULE_DELAY": "600000", "OTEL_BLRP_SCHEDULE_DELAY": "600000",
                "OTEL_METRIC_EXPORT_INTERVAL": "3600000", "PYTHONHASHSEED": "0"}
SEED = 1

Figures = dict[str, float]  # {path or "mix": Ir per request; "retries": export retries logged in the 4 runs}
# The SDK's OTLP exporters log this when an export fails and is retried (e.g. a gRPC connect timed out).
RETRY_LINE = "Transient error"


def cachegrind_ir(out_file: Path) -> int:
    """The `summary:` line of a cachegrind output file: Ir of the whole process, all threads."""
    for line in reversed(out_file.read_text().splitlines()):
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary line in {out_file}")


def run_once(arm: Arm, endpoints: dict[str, str], logdir: Path, counts: Sequence[int], warmup: int,
             tag: str) -> tuple[int, int]:
    """Ir of one worker run under valgrind with `counts` timed requests of each path, and the number of
    export retries its log shows (work that depends on wall time: it need not cancel)."""
    stem = f"{arm.name}-{'-'.join(map(str, counts))}-{tag}"
    out_file, log_path = logdir / f"{stem}.cg", logdir / f"{stem}.log"
    worker = [str(WORKER), "--out", str(logdir / f"{stem}.json"), "--counts", ",".join(map(str, counts)),
              "--warmup", str(warmup), "--seed", str(SEED)]
    argv = argv_for(arm, worker)
    at = argv.index(PYTHON)  # valgrind goes in front of the Python that runs the app
    argv[at:at] = [*VALGRIND, f"--cachegrind-out-file={out_file}"]
    env = arm_env(arm, endpoints)
    env.update(QUIET_TIMERS)
    with open(log_path, "wb") as log:
        proc = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), timeout=3600,
                              check=False)
    text = log_path.read_text(errors="replace")
    if proc.returncode != 0 or not out_file.exists():
        raise RuntimeError(f"{stem} failed (rc={proc.returncode}):\n{text[-3000:]}")
    if "Queue is full" in text or "dropped" in text.lower():
        print(f"  WARNING: {stem}: the log mentions dropped telemetry ({log_path})", flush=True)
    return cachegrind_ir(out_file), text.count(RETRY_LINE)


def prime(arm: Arm, endpoints: dict[str, str], logdir: Path) -> None:
    """One short native run of the arm: every module it imports gets its .pyc written (a baseline's
    fresh snapshot has none), so no measured run compiles Python source — hundreds of millions of
    instructions in whichever run happens to do it."""
    worker = [str(WORKER), "--out", str(logdir / f"{arm.name}-prime.json"), "--counts", "0,0,0", "--warmup", "1"]
    env = arm_env(arm, endpoints)
    env.update(QUIET_TIMERS)
    with open(logdir / f"{arm.name}-prime.log", "wb") as log:
        subprocess.run(argv_for(arm, worker), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
                       timeout=600, check=True)


def measure_arm(arm: Arm, endpoints: dict[str, str], logdir: Path, n: int, warmup: int, tag: str,
                jobs: int) -> Figures:
    """Per-path and mix Ir per request from one base run and one run per path."""
    designs = [(0,) * len(PATHS)] + [tuple(n if j == i else 0 for j in range(len(PATHS))) for i in range(len(PATHS))]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        runs = list(pool.map(lambda c: run_once(arm, endpoints, logdir, c, warmup, tag), designs))
    base = runs[0][0]
    out = {p: (runs[1 + i][0] - base) / n for i, p in enumerate(PATHS)}
    out["mix"] = sum(out[p] for p in PATHS) / len(PATHS)
    out["retries"] = sum(r[1] for r in runs)
    return out


def spread(values: Sequence[float]) -> float:
    """(max - min) / mean, in percent."""
    return (max(values) - min(values)) / (sum(values) / len(values)) * 100


def table(all_arms: Sequence[Arm], results: dict[str, list[Figures]]) -> list[str]:
    mean = medians(results)
    lines = ["| arm | " + " | ".join(f"{p} Ir/request" for p in PATHS) + " | mix Ir/request | "
             "/ upstream (same protocol), mix | / bare, mix | repeat spread, mix | export retries |",
             "|---|" + "---:|" * (len(PATHS) + 5)]
    for arm in all_arms:
        m = mean[arm.name]
        upstream = mean.get(f"upstream-{arm.protocol}") if arm.instrumented else None
        vs_up = f"{m['mix'] / upstream['mix']:.2f}" if upstream and not arm.name.startswith("upstream") else "—"
        vs_bare = f"{m['mix'] / mean['bare']['mix']:.2f}" if "bare" in mean else "—"
        runs = results[arm.name]
        rep = f"{spread([r['mix'] for r in runs]):.2f}%" if len(runs) > 1 else "—"
        lines.append(f"| {arm.name} | " + " | ".join(f"{m[p] / 1e6:.2f} M" for p in PATHS)
                     + f" | **{m['mix'] / 1e6:.2f} M** | {vs_up} | {vs_bare} | {rep} | "
                     + "/".join(str(int(r["retries"])) for r in runs) + " |")
    return lines


def medians(results: dict[str, list[Figures]]) -> dict[str, Figures]:
    """{arm: {path or mix: the median over repeats}} (an outlier run does not move it)."""
    return {a: {k: statistics.median(r[k] for r in rs) for k in (*PATHS, "mix")} for a, rs in results.items()}


def report(args: argparse.Namespace, all_arms: Sequence[Arm], results: dict[str, list[Figures]],
           seconds: float) -> str:
    mean = {a: m["mix"] for a, m in medians(results).items()}
    summary = [f"{crm}/{up} {mean[crm] / mean[up]:.2f}x" for crm, up in
               (("otel_crm-grpc", "upstream-grpc"), ("otel_crm-http", "upstream-http"), ("otel_crm-grpc", "bare"))
               if crm in mean and up in mean]
    def worst_of(arms_results: list[list[Figures]]) -> float | None:
        return max((spread([r[k] for r in rs]) for rs in arms_results if len(rs) > 1 for k in (*PATHS, "mix")),
                   default=None)

    worst = worst_of(list(results.values()))
    calm = worst_of([rs for rs in results.values() if not any(r["retries"] for r in rs)]) or worst
    lines = [
        "# Requests in instructions: instructions executed per request, valgrind", "",
        f"<!-- summary: instructions per request (mix): {'; '.join(summary)} -->", "",
        "Reproduce: `.venv/bin/python bench/request_instructions.py` (writes this file; `--baseline label=ref` "
        "adds otel_crm-grpc as of a git ref, for an A/B by instructions). Not part of `make bench`: "
        "`bench/run_all.py --instructions` runs it.", "",
        "**A proxy, not the goal.** Issue 15's goals are stated in CPU time (the `Requests (Flask app)` "
        "section, from `bench/bench_requests.py`). Instructions executed are a proxy for CPU time: they do "
        "not count kernel time (socket writes of the exporters), cache misses and branch mispredictions, "
        "nor waiting for the GIL, and an instruction of a dict lookup costs less than one of a cache-missing "
        "load. In exchange they do not depend on what else the machine runs: the same arm measured twice "
        "agrees within the spread below, where CPU time on this 2-vCPU VM wobbles by 15–30% between rounds. "
        "Use them to tell whether a change removes work (and how much), and the CPU bench to state the "
        "goals.", "",
        f"Machine: {machine_summary()}. Versions: {versions()}. valgrind "
        f"{valgrind_version()} (`{' '.join(VALGRIND)}`). Run took {seconds / 60:.1f} min "
        f"({args.jobs} valgrind run(s) at a time).", "",
        "Arms (as in bench_requests.py; every instrumented arm exports to one real collector that "
        "discards everything):", "",
    ]
    lines += [f"- **{a.name}**: {a.doc}" for a in all_arms]
    lines += [
        "",
        f"Method: bench/_inproc_worker.py (the Flask test client in a loop, `X-Tenant-ID` from 20 tenants, "
        f"{args.warmup} warm-up requests per path) runs under `opentelemetry-instrument valgrind "
        "--tool=cachegrind python …` — opentelemetry-instrument exec()s its command, so valgrind counts the "
        "process that serves the requests, all its threads (the export threads too), and nothing else. Per "
        "arm, one run with no timed request and one run per path with "
        f"{args.requests} timed requests of that path, each ending with a force_flush of spans and log "
        "records: Ir per request = (Ir of the path's run − Ir of the base run) / "
        f"{args.requests}, so startup, warm-up and shutdown cancel. `mix` is the mean of the three paths "
        "(as in bench_requests.py). Each arm first runs once without valgrind, so that no measured run "
        "compiles Python source (a missing or stale .pyc costs hundreds of millions of instructions in "
        "whichever run rewrites it: do not run the tests or edit sources meanwhile). "
        "The window's export calls (their fixed cost: a gRPC call or an HTTP "
        "POST, per batch) are spread over the window's requests; 200, the default, is the CPU bench's "
        "block (800 requests per path in 4 blocks, each ending with a flush), so both spread them alike — "
        "with fewer requests per run they weigh more (otel_crm-grpc `/ok`: 1.62 M at 50, 1.36 M at 200). "
        "Determinism: `random` seeded (the same trace IDs, so the tail sampler "
        "keeps the same traces in every run), PYTHONHASHSEED=0, and the periodic exports pushed past the run "
        "(OTEL_BSP_SCHEDULE_DELAY and OTEL_BLRP_SCHEDULE_DELAY 600 s, OTEL_METRIC_EXPORT_INTERVAL 3600 s, "
        "for every arm): under valgrind a run lasts ~20× longer, so the 1 s / 5 s / 60 s timers would fire "
        "~20× more often per request than in production, and a varying number of times per run. Spans and "
        "log records are still all exported inside the difference (batch-size trigger, then the final "
        "force_flush); metrics are exported once, at shutdown, which cancels — in production the 60 s "
        "export is spread over tens of thousands of requests.", "",
        "## Instructions per request", "",
    ]
    lines += table(all_arms, results)
    if worst is not None:
        lines += ["", f"Repeatability: every arm measured {args.repeat} times (the whole design each time); the "
                  f"largest spread, (max − min) / mean over any path or mix, is **{calm:.2f}%** over the arms "
                  f"without export retries ({worst:.2f}% over all arms). "
                  "Figures are the medians over repeats. `export retries`: per repeat, how many exports "
                  "the arm's four runs retried (the SDK exporter's `Transient error` log line) — wall-time-"
                  "driven work that need not cancel between the runs; an arm that shows them is not "
                  "deterministic to the spread above (see below)."]
    lines += ["", "Most runs repeat to within 0.01% (the same work, instruction for instruction). The "
              "exceptions seen: single runs off by 1–9% on one path (e.g. floor `/report`, otel_crm-http "
              "`/ok`). The one diagnosed (floor `/report`, +47 M instructions) had the extra all in dict "
              "lookups under `_PyType_Lookup` / `find_name_in_mro` — misses of CPython's type attribute "
              "cache, whose slot is computed from the type's version tag and the attribute name's address, "
              "so a different heap layout (another output path, an export thread allocating at another "
              "moment) collides differently; between two sessions of this script the same arm also moved by "
              "up to ~2.5% (bare `/report`). So: compare medians over 3 or more repeats (one unlucky run "
              "does not move them), and read a difference under ~3% between two arms, or between two runs "
              "of this script, as none."]
    retried = [a for a, rs in results.items() if any(r["retries"] for r in rs)]
    if retried:
        lines += ["", f"Export retries seen in: {', '.join(retried)}. "
                  "Each was the first export of a run (the flush after the warm-up), `StatusCode.UNAVAILABLE … "
                  "connection attempt timed out` (or `tcp handshaker shutdown`), then a retry after ~1 s. otel_crm "
                  "before the sixth round set the gRPC channel option `grpc.min_reconnect_backoff_ms` to 100, and "
                  "gRPC bounds a connection attempt by that value (its minimum connect timeout, 20 s by default): "
                  "under valgrind the handshake with the local collector takes longer than 100 ms, so attempts time"
                  " out until one is fast enough. How many attempts that takes depends on wall time and load, so it"
                  " does not cancel between the runs: those arms' figures carry the spread shown (medians over "
                  "repeats dampen it). Natively a loopback handshake takes well under 100 ms; a collector farther "
                  "away (TLS, a remote network) may not: this tree no longer sets the option (CHANGELOG, sixth "
                  "round)."]
    crm = mean.get("otel_crm-grpc")
    baselines = [a for a in all_arms if a.name.startswith("crm@")]
    if baselines and crm:
        lines += ["", "Baselines (otel_crm-grpc of an earlier commit, this tree's otel_crm-grpc = 1.00):", "",
                  "| arm | mix Ir/request | this tree / baseline |", "|---|---:|---:|"]
        lines += [f"| {a.name} | {mean[a.name] / 1e6:.2f} M | {crm / mean[a.name]:.3f} |" for a in baselines]
    return "\n".join(lines).rstrip() + "\n"


def valgrind_version() -> str:
    return subprocess.run(["valgrind", "--version"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="bare and otel_crm-grpc, 50 requests, prints only")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS), help="comma-separated (bench_requests.py's "
                        "arms, --diagnose ones included)")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per path run")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up requests per path, every run")
    parser.add_argument("--repeat", type=int, default=3, help="measure every arm this many times (the spread)")
    parser.add_argument("--jobs", type=int, default=1, help="valgrind runs at a time (counts do not depend "
                        "on it; other benches running meanwhile do)")
    parser.add_argument("--baseline", default="", help="label=gitref,...: add otel_crm-grpc as of each ref")
    parser.add_argument("--output", default=str(DOCS / "bench-request-instructions.md"))
    args = parser.parse_args()
    if args.quick:
        args.arms, args.requests, args.repeat = "bare,otel_crm-grpc", 50, 1
    started = time.monotonic()
    logdir = Path(tempfile.mkdtemp(prefix="otel-crm-bench-instructions-"))
    print(f"request_instructions: logs and cachegrind files in {logdir}", flush=True)
    known = {a.name: a for a in arms(True)}
    wanted = [n.strip() for n in args.arms.split(",") if n.strip()]
    missing = [n for n in wanted if n not in known]
    if missing:
        raise SystemExit(f"unknown arm(s) {missing}; known: {', '.join(known)}")
    all_arms = [known[n] for n in wanted] + baseline_arms(args.baseline, logdir)
    results: dict[str, list[Figures]] = {a.name: [] for a in all_arms}
    with NullCollector() as collector:
        endpoints = {"grpc": collector.grpc_endpoint, "http": collector.http_endpoint}
        for arm in all_arms:
            prime(arm, endpoints, logdir)
        for r in range(args.repeat):
            for arm in all_arms:
                figures = measure_arm(arm, endpoints, logdir, args.requests, args.warmup, f"r{r}", args.jobs)
                results[arm.name].append(figures)
                print(f"  repeat {r + 1}/{args.repeat} {arm.name:>16}: "
                      + ", ".join(f"{k} {figures[k] / 1e6:.3f} M" for k in (*PATHS, "mix"))
                      + f" Ir/request ({(time.monotonic() - started) / 60:.1f} min)", flush=True)
    text = report(args, all_arms, results, time.monotonic() - started)
    print(text)
    if not args.quick:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
