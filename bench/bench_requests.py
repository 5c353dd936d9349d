"""Per-request cost of the Flask CRM example: uninstrumented vs upstream `opentelemetry-distro`
(always-on) vs otel_crm (production defaults), in one run.

    .venv/bin/python bench/bench_requests.py            # ~10-15 min, writes docs/bench-requests.md
    .venv/bin/python bench/bench_requests.py --quick    # ~2 min smoke run, prints only

Arms (the same OTLP/gRPC exporter and the same endpoint: one real otelcol-crm started here on free
loopback ports with bench/collector-null.yaml, which receives everything and discards it):

  bare      `python examples/flask_crm/app.py`, no OpenTelemetry at all
  upstream  `opentelemetry-instrument` with OTEL_PYTHON_DISTRO=distro, OTEL_PYTHON_CONFIGURATOR=
            configurator, OTLP traces/metrics/logs; always-on sampling; logs are shipped by
            opentelemetry-instrumentation-logging's handler (the default when it is installed)
  otel_crm  `opentelemetry-instrument` with otel_crm's production defaults: tail sampling 10%,
            RED metrics, tenant extraction, access log, JSON logs on stdout, scrubbing

Two variants, both with arms interleaved (order rotates every round) and medians over rounds:

  in-process  a fresh subprocess per arm and round runs bench/_inproc_worker.py: `create_app()` and
              Flask's test client in a loop (no HTTP server, no socket). Wall time and process CPU
              time (all threads: exporters included) per request.
  http        the three apps served by werkzeug (`app.py`'s own `app.run`), requests from this
              process over one keep-alive http.client connection per arm. Client-observed wall time
              and the server process's CPU time (/proc/<pid>/stat) per request.

stdout and stderr of every app go to a log file (otel_crm's JSON logs, werkzeug's request lines);
PYTHONUNBUFFERED is unset for all arms. CPU time is the figure to trust on a busy machine: wall
time also counts the time other processes held the CPU.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH,
    DOCS,
    PYTHON,
    ROOT,
    VENV_BIN,
    NullCollector,
    clean_env,
    free_port,
    http_ok,
    machine_summary,
    median,
    wait_until,
)

APP = ROOT / "examples" / "flask_crm" / "app.py"
WORKER = BENCH / "_inproc_worker.py"
INSTRUMENT = str(VENV_BIN / "opentelemetry-instrument")
PATHS = ("/ok", "/leads")
SEED_LEADS = 5
GOAL_VS_UPSTREAM = 0.75
GOAL_VS_BARE = 1.6


@dataclass(frozen=True)
class Arm:
    name: str
    instrumented: bool
    env: dict[str, str] = field(default_factory=dict)
    worker_args: tuple[str, ...] = ()
    doc: str = ""


def arms(diagnose: bool) -> list[Arm]:
    main = [
        Arm("bare", False, doc="no OpenTelemetry"),
        Arm("upstream", True, {"OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator",
                               "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp",
                               "OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            doc="opentelemetry-distro 0.66b1, always-on, OTLP traces/metrics/logs"),
        Arm("otel_crm", True, {"OTEL_PYTHON_DISTRO": "otel_crm", "OTEL_PYTHON_CONFIGURATOR": "otel_crm"},
            doc="otel_crm production defaults (tail 10%, JSON logs on stdout)"),
    ]
    if not diagnose:
        return main
    crm = main[2].env
    return [
        *main,
        Arm("crm-no-access-log", True, crm, ("--disable-logger", "otel_crm.access"),
            doc="otel_crm, the `otel_crm.access` logger disabled (what-if)"),
        Arm("crm-no-logs", True, {**crm, "OTEL_CRM_LOG_FORMAT": "none", "OTEL_LOGS_EXPORTER": "none"},
            doc="otel_crm, OTEL_CRM_LOG_FORMAT=none and OTEL_LOGS_EXPORTER=none"),
        Arm("crm-sampling-off", True, {**crm, "OTEL_CRM_SAMPLING_MODE": "off"},
            doc="otel_crm, OTEL_CRM_SAMPLING_MODE=off (exports 100%, like upstream)"),
    ]


def arm_env(arm: Arm, endpoint: str) -> dict[str, str]:
    env = clean_env({"CRM_SERVICES_URL": "http://127.0.0.1:9"})  # /ok and /leads call out to nothing
    env.pop("PYTHONUNBUFFERED", None)
    if arm.instrumented:
        env.update({"OTEL_SERVICE_NAME": "flask-crm-bench", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        env.update(arm.env)
    return env


def argv_for(arm: Arm, script: Sequence[str]) -> list[str]:
    return ([INSTRUMENT] if arm.instrumented else []) + [PYTHON, *script]


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


# --- in-process variant -----------------------------------------------------------------------------

def run_worker(arm: Arm, endpoint: str, logdir: Path, n: int, blocks: int, warmup: int,
               profile: str = "") -> dict[str, Any]:
    out = logdir / f"inproc-{arm.name}.json"
    out.unlink(missing_ok=True)
    args = [str(WORKER), "--out", str(out), "--requests", str(n), "--blocks", str(blocks),
            "--warmup", str(warmup), *arm.worker_args]
    if profile:
        args += ["--profile", profile]
    log_path = logdir / f"inproc-{arm.name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.run(argv_for(arm, args), env=arm_env(arm, endpoint), stdout=log,
                              stderr=subprocess.STDOUT, cwd=str(ROOT), timeout=900, check=False)
    if proc.returncode != 0 or not out.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"in-process worker for {arm.name} failed (rc={proc.returncode}):\n{tail}")
    return dict(json.loads(out.read_text()))


def inproc_variant(all_arms: list[Arm], endpoint: str, logdir: Path, rounds: int, n: int,
                   blocks: int, warmup: int) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{arm: {measure: {path: [median of blocks, one per round]}}}"""
    results: dict[str, dict[str, dict[str, list[float]]]] = {
        a.name: {m: {p: [] for p in PATHS} for m in ("wall_us", "cpu_us")} for a in all_arms}
    for r in range(rounds):
        for arm in rotated(all_arms, r):
            data = run_worker(arm, endpoint, logdir, n, blocks, warmup)
            for measure in ("wall_us", "cpu_us"):
                for path in PATHS:
                    results[arm.name][measure][path].append(median(data[measure][path]))
            print(f"  in-process round {r + 1}/{rounds} {arm.name:>18}: "
                  + ", ".join(f"{p} {median(data['cpu_us'][p]):7.1f} µs cpu / {median(data['wall_us'][p]):7.1f} wall"
                              for p in PATHS), flush=True)
    return results


# --- HTTP variant -----------------------------------------------------------------------------------

def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class Server:
    def __init__(self, arm: Arm, endpoint: str, logdir: Path):
        self.arm = arm
        self.port = free_port()
        env = arm_env(arm, endpoint)
        env["CRM_PORT"] = str(self.port)
        self.log_path = logdir / f"http-{arm.name}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child holds it
        # opentelemetry-instrument exec()s Python: the pid stays the app's, so /proc/<pid> is the app.
        self.proc = subprocess.Popen(argv_for(arm, [str(APP)]), env=env, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=str(ROOT), start_new_session=True)
        log.close()
        self.conn: http.client.HTTPConnection | None = None

    def wait(self) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.arm.name} exited:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            return http_ok(f"http://127.0.0.1:{self.port}/health")

        wait_until(up, 60, f"the {self.arm.name} app")
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        for i in range(SEED_LEADS):
            body = json.dumps({"name": f"Lead {i}", "email": f"lead{i}@example.com", "company": f"Co {i}"})
            status = self.request("POST", "/leads", body)
            assert status == 201, status

    def request(self, method: str, path: str, body: str | None = None) -> int:
        assert self.conn is not None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        response.read()
        return int(response.status)

    def timed(self, path: str, n: int) -> tuple[float, float]:
        """(wall µs, server CPU µs) per request over n keep-alive GETs."""
        assert self.conn is not None
        conn = self.conn
        cpu0 = proc_cpu_seconds(self.proc.pid)
        started = time.perf_counter()
        for _ in range(n):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{self.arm.name} {path}: HTTP {response.status}")
        wall = time.perf_counter() - started
        cpu = proc_cpu_seconds(self.proc.pid) - cpu0
        return wall / n * 1e6, cpu / n * 1e6

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def http_variant(all_arms: list[Arm], endpoint: str, logdir: Path, rounds: int, n: int,
                 warmup: int) -> dict[str, dict[str, dict[str, list[float]]]]:
    results: dict[str, dict[str, dict[str, list[float]]]] = {
        a.name: {m: {p: [] for p in PATHS} for m in ("wall_us", "cpu_us")} for a in all_arms}
    servers = [Server(arm, endpoint, logdir) for arm in all_arms]
    try:
        for server in servers:
            server.wait()
        for server in servers:
            for path in PATHS:
                server.timed(path, warmup)
        time.sleep(1.0)
        for r in range(rounds):
            for server in rotated(servers, r):
                line = []
                for path in PATHS:
                    wall, cpu = server.timed(path, n)
                    results[server.arm.name]["wall_us"][path].append(wall)
                    results[server.arm.name]["cpu_us"][path].append(cpu)
                    line.append(f"{path} {wall:7.1f} µs wall / {cpu:7.1f} server cpu")
                print(f"  http round {r + 1}/{rounds} {server.arm.name:>18}: " + ", ".join(line), flush=True)
                time.sleep(0.3)  # let this arm's exporter threads settle before the next arm
    finally:
        for server in servers:
            server.stop()
    return results


# --- profile ----------------------------------------------------------------------------------------

def profile_arms(all_arms: list[Arm], endpoint: str, logdir: Path, n: int) -> str:
    """cProfile of the timed loop, upstream vs otel_crm: the biggest costs otel_crm adds."""
    by_name = {a.name: a for a in all_arms}
    stats: dict[str, pstats.Stats] = {}
    for name in ("upstream", "otel_crm"):
        path = str(logdir / f"{name}.prof")
        run_worker(by_name[name], endpoint, logdir, n, 2, 300, profile=path)
        stats[name] = pstats.Stats(path, stream=io.StringIO())
    requests = n // 2 * 2 * len(PATHS)  # blocks * per_block * paths

    def rows(st: pstats.Stats) -> dict[tuple[str, int, str], tuple[int, float, float]]:
        return {k: (v[1], v[2], v[3]) for k, v in st.stats.items()}  # type: ignore[attr-defined]

    def where(key: tuple[str, int, str]) -> str:
        file, line, func = key
        file = re.sub(r"^.*/site-packages/|^.*/lib/python3\.\d+/|^" + re.escape(str(ROOT)) + "/", "", file)
        return f"`{file}:{line}` {func}" if line else f"`{func}`"

    crm, up = rows(stats["otel_crm"]), rows(stats["upstream"])
    total_crm = sum(v[1] for v in crm.values())
    total_up = sum(v[1] for v in up.values())
    lines = [f"cProfile of the in-process timed loop ({requests} requests, /ok and /leads, one run per arm; "
             f"profiling inflates everything, read the shares). Total profiled time per request: "
             f"upstream {total_up / requests * 1e6:.0f} µs, otel_crm {total_crm / requests * 1e6:.0f} µs.", "",
             "Cumulative time of otel_crm's own code per request (the top entries overlap: callers "
             "include callees):", "",
             "| function | calls/request | cumulative µs/request | share of otel_crm's total |",
             "|---|---:|---:|---:|"]
    own = sorted(((k, v) for k, v in crm.items() if "/otel_crm/" in k[0]), key=lambda kv: -kv[1][2])
    for key, (calls, _tt, ct) in own[:14]:
        lines.append(f"| {where(key)} | {calls / requests:.1f} | {ct / requests * 1e6:.1f} | "
                     f"{ct / total_crm * 100:.1f}% |")
    lines += ["", "Self time that grows most from upstream to otel_crm (per request, any module):", "",
              "| function | upstream µs | otel_crm µs | delta |", "|---|---:|---:|---:|"]
    deltas = []
    for key in set(crm) | set(up):
        a = up.get(key, (0, 0.0, 0.0))[1] / requests * 1e6
        b = crm.get(key, (0, 0.0, 0.0))[1] / requests * 1e6
        deltas.append((b - a, key, a, b))
    for delta, key, a, b in sorted(deltas, key=lambda d: -d[0])[:15]:
        lines.append(f"| {where(key)} | {a:.1f} | {b:.1f} | +{delta:.1f} |")
    return "\n".join(lines)


# --- report -----------------------------------------------------------------------------------------

def summarize(results: dict[str, dict[str, dict[str, list[float]]]], measure: str) -> dict[str, dict[str, float]]:
    """{arm: {path or 'mix': median µs}}; mix = mean of the per-path medians (a 50/50 request mix)."""
    out: dict[str, dict[str, float]] = {}
    for arm, data in results.items():
        per = {p: median(data[measure][p]) for p in PATHS}
        per["mix"] = sum(per[p] for p in PATHS) / len(PATHS)
        out[arm] = per
    return out


def table(results: dict[str, dict[str, dict[str, list[float]]]], all_arms: list[Arm], cpu_label: str) -> list[str]:
    all_arms = [a for a in all_arms if a.name in results]
    wall, cpu = summarize(results, "wall_us"), summarize(results, "cpu_us")
    lines = [f"| arm | /ok wall µs | /leads wall µs | /ok {cpu_label} µs | /leads {cpu_label} µs |",
             "|---|---:|---:|---:|---:|"]
    for arm in all_arms:
        w, c = wall[arm.name], cpu[arm.name]
        lines.append(f"| {arm.name} | {w['/ok']:.0f} | {w['/leads']:.0f} | {c['/ok']:.0f} | {c['/leads']:.0f} |")
    lines += ["", "| ratio | measure | /ok | /leads | mix | goal |", "|---|---|---:|---:|---:|---|"]
    for label, data in (("wall", wall), (cpu_label, cpu)):
        for num, den, goal in (("otel_crm", "upstream", GOAL_VS_UPSTREAM), ("otel_crm", "bare", GOAL_VS_BARE),
                               ("upstream", "bare", None)):
            vals = [data[num][p] / data[den][p] for p in (*PATHS, "mix")]
            verdict = "" if goal is None else (f"≤ {goal} — {'met' if vals[2] <= goal else 'MISSED'}")
            lines.append(f"| {num} / {den} | {label} | {vals[0]:.2f} | {vals[1]:.2f} | {vals[2]:.2f} | {verdict} |")
    extra = [a for a in all_arms if a.name not in ("bare", "upstream", "otel_crm")]
    if extra:
        lines += ["", "What-if arms (diagnosis only; not a shipped configuration):", "",
                  f"| arm | what | mix {cpu_label} µs | / upstream | / bare |", "|---|---|---:|---:|---:|"]
        for arm in extra:
            mix = cpu[arm.name]["mix"]
            lines.append(f"| {arm.name} | {arm.doc} | {mix:.0f} | {mix / cpu['upstream']['mix']:.2f} | "
                         f"{mix / cpu['bare']['mix']:.2f} |")
    return lines


def ratio(results: dict[str, dict[str, dict[str, list[float]]]], measure: str, num: str, den: str) -> float:
    s = summarize(results, measure)
    return s[num]["mix"] / s[den]["mix"]


Results = dict[str, dict[str, dict[str, list[float]]]]


def report(args: argparse.Namespace, all_arms: list[Arm], inproc: Results | None, httpv: Results | None,
           profile: str, load: tuple[float, float], seconds: float) -> str:
    cmd = ".venv/bin/python bench/bench_requests.py"
    summary = []
    if inproc:
        summary.append(f"in-process CPU: otel_crm/upstream {ratio(inproc, 'cpu_us', 'otel_crm', 'upstream'):.2f}x "
                       f"(goal ≤ {GOAL_VS_UPSTREAM}), otel_crm/bare {ratio(inproc, 'cpu_us', 'otel_crm', 'bare'):.2f}x "
                       f"(goal ≤ {GOAL_VS_BARE})")
    if httpv:
        summary.append(f"HTTP server CPU: otel_crm/upstream {ratio(httpv, 'cpu_us', 'otel_crm', 'upstream'):.2f}x, "
                       f"otel_crm/bare {ratio(httpv, 'cpu_us', 'otel_crm', 'bare'):.2f}x (wall "
                       f"{ratio(httpv, 'wall_us', 'otel_crm', 'upstream'):.2f}x / "
                       f"{ratio(httpv, 'wall_us', 'otel_crm', 'bare'):.2f}x)")
    lines = [
        "# Requests: Flask example, uninstrumented vs upstream distro vs otel_crm", "",
        f"<!-- summary: {'; '.join(summary)} -->", "",
        f"Reproduce: `{cmd}` (writes this file; `--quick` for a smoke run, `--no-diagnose` drops the what-if arms; "
        "`make bench` runs every bench).",
        "",
        f"Machine: {machine_summary()}. Load average before/after the run: {load[0]:.1f} / {load[1]:.1f} "
        f"(other work on the machine inflates wall times; CPU time is the steadier figure). "
        f"Run took {seconds / 60:.1f} min. Versions: " + versions() + ".",
        "",
        "Arms — all exporting OTLP/gRPC to the same real collector (otelcol-crm, "
        "`bench/collector-null.yaml`: receive and discard):", "",
    ]
    lines += [f"- **{a.name}**: {a.doc}" for a in all_arms]
    lines += ["",
              "Method: arms interleaved, order rotating each round; figures are medians over rounds. "
              "Requests are GET `/ok` (JSON, no I/O) and GET `/leads` (SQLAlchemy select on in-memory "
              f"SQLite, {SEED_LEADS} leads seeded); `mix` is the mean of the two (a 50/50 mix). Apps' "
              "stdout/stderr go to a file; PYTHONUNBUFFERED unset; SDK defaults for batch delays.", ""]
    if inproc:
        lines += ["## In-process (Flask test client, no HTTP server)", "",
                  f"`{args.rounds}` rounds × a fresh process per arm; each process warms up "
                  f"({args.warmup} requests per path), then times {args.inproc_requests} requests per path "
                  f"in {args.blocks} blocks (median of blocks). CPU = process CPU time, all threads "
                  "(export threads included).", ""]
        lines += table(inproc, all_arms, "cpu")
        lines.append("")
    if httpv:
        lines += ["## Over HTTP (werkzeug dev server, keep-alive loopback client)", "",
                  f"The three apps run side by side (`python examples/flask_crm/app.py`, under "
                  f"`opentelemetry-instrument` for upstream/otel_crm); this process sends {args.http_requests} "
                  f"GETs per path per arm per round over one keep-alive `http.client` connection, "
                  f"{args.rounds} rounds after {args.warmup} warm-up requests per path. Wall = client-observed "
                  "latency per request (client + loopback + server); server cpu = the app process's CPU "
                  "time per request. Werkzeug's own per-request work (and its request log line: stderr for "
                  "bare, an OTLP log record for upstream, OTLP + a JSON line for otel_crm) dilutes or adds "
                  "to the ratios.", ""]
        lines += table(httpv, all_arms, "server cpu")
        lines.append("")
    if profile:
        lines += ["## Where otel_crm's time goes", "", profile, ""]
    return "\n".join(lines).rstrip() + "\n"


def versions() -> str:
    from importlib.metadata import version

    names = ("opentelemetry-sdk", "opentelemetry-instrumentation", "opentelemetry-distro", "flask", "werkzeug")
    return ", ".join(f"{n} {version(n)}" for n in names) + f", CPython {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer rounds/requests, prints only")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inproc-requests", type=int, default=2000, help="per path per process")
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--http-requests", type=int, default=1500, help="per path per arm per round")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--variants", default="inproc,http")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-diagnose", dest="diagnose", action="store_false",
                        help="skip the what-if otel_crm arms (in-process variant)")
    parser.add_argument("--output", default=str(DOCS / "bench-requests.md"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.inproc_requests, args.http_requests, args.warmup = 2, 1000, 500, 200
    variants = set(args.variants.split(","))
    started = time.monotonic()
    load0 = os.getloadavg()[0]
    logdir = Path(tempfile.mkdtemp(prefix="otel-crm-bench-requests-"))
    print(f"bench_requests: logs in {logdir}", flush=True)
    main_arms = arms(False)
    inproc = httpv = None
    profile = ""
    with NullCollector() as collector:
        endpoint = collector.grpc_endpoint
        if "inproc" in variants:
            inproc = inproc_variant(arms(args.diagnose), endpoint, logdir, args.rounds, args.inproc_requests,
                                    args.blocks, args.warmup)
        if "http" in variants:
            httpv = http_variant(main_arms, endpoint, logdir, args.rounds, args.http_requests, args.warmup)
        if not args.no_profile and not args.quick:
            profile = profile_arms(main_arms, endpoint, logdir, min(args.inproc_requests, 2000))
    text = report(args, arms(args.diagnose) if inproc else main_arms, inproc, httpv, profile,
                  (load0, os.getloadavg()[0]), time.monotonic() - started)
    print(text)
    if not args.quick:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
