"""Per-request cost of a Flask app: uninstrumented vs upstream `opentelemetry-distro` (always-on) vs
otel_crm (production defaults), over OTLP/gRPC and OTLP/HTTP, in one run.

    .venv/bin/python bench/bench_requests.py            # ~5 min, writes docs/bench-requests.md
    .venv/bin/python bench/bench_requests.py --quick    # ~2 min smoke run, prints only

The app is bench/_bench_app.py: the Flask CRM example plus `/report` (four SQL child spans). Paths:
GET /ok (no I/O), GET /leads (one SQL span), GET /report (four SQL spans); every request carries
`X-Tenant-ID` from 20 tenants in turn. One real otelcol-crm started here on free loopback ports
(bench/collector-null.yaml: receives everything on gRPC and HTTP, discards it) is every arm's endpoint.

Arms:

  bare           no OpenTelemetry at all
  upstream-grpc  `opentelemetry-instrument` with OTEL_PYTHON_DISTRO=distro, OTEL_PYTHON_CONFIGURATOR=
  upstream-http  configurator, OTLP traces/metrics/logs over gRPC / HTTP; always-on sampling; logs
                 shipped by opentelemetry-instrumentation-logging's handler (the default when installed)
  otel_crm-grpc  `opentelemetry-instrument` with otel_crm's production defaults: tail sampling 10%,
  otel_crm-http  RED metrics, tenant extraction (X-Tenant-ID), access log, JSON logs on stdout, scrubbing

Two variants, arms interleaved (order rotates every round), medians over rounds:

  in-process  a fresh subprocess per arm and round runs bench/_inproc_worker.py: Flask's test client in
              a loop (no HTTP server, no socket), each timed block ending with a force_flush of spans
              and log records inside the timed window. Process CPU time (all threads: exporters
              included) and wall time per request.
  http        the apps served by werkzeug (bench/_bench_app.py), requests from this process through one
              http.client connection object per arm; werkzeug's dev server answers every request with
              `Connection: close`, so each request is a new loopback connection and a new server
              thread (the same for every arm); each timed window ends with GET /_bench/flush
              (the same force_flush). Client-observed wall time and the server process's CPU time
              (/proc/<pid>/stat, all threads) per request.
  gunicorn    the same, served by gunicorn with one sync worker (`gunicorn _bench_app:create_bench_app()`,
              under `opentelemetry-instrument` for the instrumented arms), as production runs a Flask
              app: no thread per request (a sync worker also closes each connection); server CPU =
              the master's plus the worker's.

Metrics are exported at the production interval (60 s, both distros): not flushed per block.
stdout and stderr of every app go to a log file (otel_crm's JSON logs, werkzeug's request lines);
PYTHONUNBUFFERED is unset for all arms. CPU time is the figure to trust on a busy machine: wall
time also counts the time other processes held the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
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
    SEED_LEADS,
    TENANTS,
    VENV_BIN,
    NullCollector,
    clean_env,
    free_port,
    http_ok,
    machine_summary,
    median,
    median_ci,
    wait_until,
)
from _common import REQUEST_PATHS as PATHS

APP = BENCH / "_bench_app.py"
WORKER = BENCH / "_inproc_worker.py"
INSTRUMENT = str(VENV_BIN / "opentelemetry-instrument")
GOAL_VS_UPSTREAM = 0.75
GOAL_VS_BARE = 1.6


@dataclass(frozen=True)
class Arm:
    name: str
    instrumented: bool
    env: dict[str, str] = field(default_factory=dict)
    worker_args: tuple[str, ...] = ()
    doc: str = ""
    protocol: str = ""  # "grpc" or "http": which collector endpoint the arm exports to
    pythonpath: str = ""  # an otel_crm snapshot of an earlier commit (--baseline), ahead of this tree


PROTOCOLS = ("grpc", "http")
_OTLP = {"grpc": "grpc", "http": "http/protobuf"}
UPSTREAM_ENV = {"OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator",
                "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp"}
CRM_ENV = {"OTEL_PYTHON_DISTRO": "otel_crm", "OTEL_PYTHON_CONFIGURATOR": "otel_crm"}


def arms(diagnose: bool) -> list[Arm]:
    main = [Arm("bare", False, doc="no OpenTelemetry")]
    for proto in PROTOCOLS:
        main.append(Arm(f"upstream-{proto}", True, {**UPSTREAM_ENV, "OTEL_EXPORTER_OTLP_PROTOCOL": _OTLP[proto]},
                        doc=f"opentelemetry-distro, always-on, OTLP/{proto.upper()} traces/metrics/logs",
                        protocol=proto))
        main.append(Arm(f"otel_crm-{proto}", True, {**CRM_ENV, "OTEL_EXPORTER_OTLP_PROTOCOL": _OTLP[proto]},
                        doc=f"otel_crm production defaults (tail 10%, RED, tenancy, scrubbing, JSON logs on "
                            f"stdout), OTLP/{proto.upper()}", protocol=proto))
    if not diagnose:
        return main
    crm = {**CRM_ENV, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    return [
        *main,
        Arm("crm-no-logs", True, {**crm, "OTEL_CRM_LOG_FORMAT": "none", "OTEL_LOGS_EXPORTER": "none"},
            doc="otel_crm-grpc, OTEL_CRM_LOG_FORMAT=none and OTEL_LOGS_EXPORTER=none (what-if)", protocol="grpc"),
        Arm("crm-sampling-off", True, {**crm, "OTEL_CRM_SAMPLING_MODE": "off"},
            doc="otel_crm-grpc, OTEL_CRM_SAMPLING_MODE=off (exports 100%, like upstream; what-if)",
            protocol="grpc"),
        # The floor under any distro built on these instrumentations: they run and the SDK makes
        # their spans, but nothing is processed, recorded or exported.
        Arm("floor", True, {**UPSTREAM_ENV, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
                            "OTEL_LOGS_EXPORTER": "none"},
            doc="opentelemetry-distro with every exporter `none`: the instrumentations and the SDK's span "
                "creation, nothing processed or exported (what-if: the floor)", protocol="grpc"),
    ]


# (numerator, denominator, goal) pairs the report states
PAIRS = (("otel_crm-grpc", "upstream-grpc", GOAL_VS_UPSTREAM), ("otel_crm-http", "upstream-http", GOAL_VS_UPSTREAM),
         ("otel_crm-grpc", "bare", GOAL_VS_BARE), ("otel_crm-http", "bare", GOAL_VS_BARE))


def arm_env(arm: Arm, endpoints: dict[str, str]) -> dict[str, str]:
    env = clean_env({"CRM_SERVICES_URL": "http://127.0.0.1:9"})  # no route calls out
    env.pop("PYTHONUNBUFFERED", None)
    if arm.instrumented:
        env.update({"OTEL_SERVICE_NAME": "flask-crm-bench", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoints[arm.protocol]})
        env.update(arm.env)
    if arm.pythonpath:
        # The working directory after the snapshot: opentelemetry-instrument puts the working
        # directory (this tree) first on PYTHONPATH unless it is already there, which would load
        # this tree's otel_crm instead of the baseline's.
        env["PYTHONPATH"] = os.pathsep.join((arm.pythonpath, str(ROOT)))
    return env


def baseline_arms(spec: str, workdir: Path) -> list[Arm]:
    """`label=ref,...`: otel_crm-grpc arms running the otel_crm package of each git ref (extracted
    with `git archive` and put first on PYTHONPATH): before/after figures from one interleaved run."""
    out = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        label, _, ref = item.partition("=")
        target = workdir / f"otel_crm-at-{label}"
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", ref or label, "otel_crm"], cwd=str(ROOT), check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        out.append(Arm(f"crm@{label}", True, {**CRM_ENV, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
                       doc=f"otel_crm-grpc as of `{ref or label}` (baseline)", protocol="grpc",
                       pythonpath=str(target)))
    return out


def argv_for(arm: Arm, script: Sequence[str]) -> list[str]:
    return ([INSTRUMENT] if arm.instrumented else []) + [PYTHON, *script]


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


Results = dict[str, dict[str, dict[str, list[float]]]]  # {arm: {measure: {path: [one per round]}}}


def empty_results(all_arms: Sequence[Arm]) -> Results:
    return {a.name: {m: {p: [] for p in PATHS} for m in ("wall_us", "cpu_us")} for a in all_arms}


# --- in-process variant -----------------------------------------------------------------------------

def run_worker(arm: Arm, endpoints: dict[str, str], logdir: Path, n: int, blocks: int, warmup: int,
               profile: str = "") -> dict[str, Any]:
    out = logdir / f"inproc-{arm.name}.json"
    out.unlink(missing_ok=True)
    args = [str(WORKER), "--out", str(out), "--requests", str(n), "--blocks", str(blocks),
            "--warmup", str(warmup), *arm.worker_args]
    if profile:
        args += ["--profile", profile]
    log_path = logdir / f"inproc-{arm.name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.run(argv_for(arm, args), env=arm_env(arm, endpoints), stdout=log,
                              stderr=subprocess.STDOUT, cwd=str(ROOT), timeout=900, check=False)
    if proc.returncode != 0 or not out.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"in-process worker for {arm.name} failed (rc={proc.returncode}):\n{tail}")
    return dict(json.loads(out.read_text()))


def inproc_variant(all_arms: list[Arm], endpoints: dict[str, str], logdir: Path, rounds: int, n: int,
                   blocks: int, warmup: int) -> Results:
    results = empty_results(all_arms)
    for r in range(rounds):
        for arm in rotated(all_arms, r):
            data = run_worker(arm, endpoints, logdir, n, blocks, warmup)
            for measure in ("wall_us", "cpu_us"):
                for path in PATHS:
                    results[arm.name][measure][path].append(median(data[measure][path]))
            print(f"  in-process round {r + 1}/{rounds} {arm.name:>16}: "
                  + ", ".join(f"{p} {median(data['cpu_us'][p]):6.0f}" for p in PATHS) + " µs cpu", flush=True)
    return results


# --- HTTP variant -----------------------------------------------------------------------------------

def proc_cpu_seconds(pid: int) -> float:
    """CPU time of process `pid`, all its threads, user + system: Linux's process CPU clock, to the
    nanosecond (`clock_gettime` of the clock id the kernel derives from a pid, CPUCLOCK_SCHED); where
    that clock cannot be read, /proc/<pid>/stat's utime + stime, in clock ticks (10 ms: 20 µs per
    request over a 500-request window)."""
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9
    except OSError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def children(pid: int) -> list[int]:
    """The child processes of `pid` (a gunicorn master's workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def server_cpu_seconds(pid: int) -> float:
    """CPU of the server process and its children (gunicorn: the master and its worker)."""
    total = proc_cpu_seconds(pid)
    for child in children(pid):
        with contextlib.suppress(OSError):
            total += proc_cpu_seconds(child)
    return total


class Server:
    def __init__(self, arm: Arm, endpoints: dict[str, str], logdir: Path, server: str = "werkzeug"):
        self.arm = arm
        self.port = free_port()
        env = arm_env(arm, endpoints)
        env["CRM_PORT"] = str(self.port)
        self.log_path = logdir / f"{server}-{arm.name}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child holds it
        script = [str(APP)] if server == "werkzeug" else [
            "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{self.port}", "--chdir", str(BENCH),
            "_bench_app:create_bench_app()"]
        # opentelemetry-instrument exec()s Python: the pid stays the app's (gunicorn's: the master's).
        self.proc = subprocess.Popen(argv_for(arm, script), env=env, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=str(ROOT), start_new_session=True)
        log.close()
        self.conn: http.client.HTTPConnection | None = None
        self.headers = [{"X-Tenant-ID": t} for t in TENANTS]

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
        """(wall µs, server CPU µs) per request over n GETs (a new connection each: both servers close
        them), then the flush request."""
        assert self.conn is not None
        conn, headers = self.conn, self.headers
        cpu0 = server_cpu_seconds(self.proc.pid)
        started = time.perf_counter()
        for i in range(n):
            conn.request("GET", path, headers=headers[i % len(headers)])
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{self.arm.name} {path}: HTTP {response.status}")
        if self.request("GET", "/_bench/flush") != 200:
            raise RuntimeError(f"{self.arm.name}: flush failed")
        wall = time.perf_counter() - started
        cpu = server_cpu_seconds(self.proc.pid) - cpu0
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


def http_variant(all_arms: list[Arm], endpoints: dict[str, str], logdir: Path, rounds: int, n: int,
                 warmup: int, server_kind: str = "werkzeug") -> Results:
    results = empty_results(all_arms)
    servers = [Server(arm, endpoints, logdir, server_kind) for arm in all_arms]
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
                    line.append(f"{path} {cpu:6.0f}")
                print(f"  {server_kind} round {r + 1}/{rounds} {server.arm.name:>16}: " + ", ".join(line)
                      + " µs server cpu",
                      flush=True)
                time.sleep(0.2)  # let this arm's exporter threads settle before the next arm
    finally:
        for server in servers:
            server.stop()
    return results


# --- profile ----------------------------------------------------------------------------------------

def _where(key: tuple[str, int, str]) -> str:
    file, line, func = key
    file = re.sub(r"^.*/site-packages/|^.*/lib/python3\.\d+/|^" + re.escape(str(ROOT)) + "/", "", file)
    return f"`{file}:{line}` {func}" if line else f"`{func}`"


def profile_arms(all_arms: list[Arm], endpoints: dict[str, str], logdir: Path, n: int) -> str:
    """cProfile of the timed loop, upstream vs otel_crm (gRPC): own time of the top entries and the
    biggest costs otel_crm adds."""
    by_name = {a.name: a for a in all_arms}
    stats: dict[str, pstats.Stats] = {}
    for name in ("upstream-grpc", "otel_crm-grpc"):
        path = str(logdir / f"{name}.prof")
        run_worker(by_name[name], endpoints, logdir, n, 2, 200, profile=path)
        stats[name] = pstats.Stats(path, stream=io.StringIO())
    requests = n // 2 * 2 * len(PATHS)  # blocks * per_block * paths

    def rows(st: pstats.Stats) -> dict[tuple[str, int, str], tuple[int, float, float]]:
        return {k: (v[1], v[2], v[3]) for k, v in st.stats.items()}  # type: ignore[attr-defined]

    crm, up = rows(stats["otel_crm-grpc"]), rows(stats["upstream-grpc"])
    total_crm = sum(v[1] for v in crm.values())
    total_up = sum(v[1] for v in up.values())
    lines = [f"cProfile of the in-process timed loop, main thread ({requests} requests over {', '.join(PATHS)}, "
             f"one run per arm; profiling inflates everything, read the shares). Total profiled time per "
             f"request: upstream {total_up / requests * 1e6:.0f} µs, otel_crm {total_crm / requests * 1e6:.0f} µs.",
             "", "Top own-time entries under otel_crm (any module):", "",
             "| function | calls/request | own µs/request | share |", "|---|---:|---:|---:|"]
    for key, (calls, tt, _ct) in sorted(crm.items(), key=lambda kv: -kv[1][1])[:15]:
        lines.append(f"| {_where(key)} | {calls / requests:.1f} | {tt / requests * 1e6:.1f} | "
                     f"{tt / total_crm * 100:.1f}% |")
    lines += ["", "Cumulative time of otel_crm's own code per request (callers include callees):", "",
              "| function | calls/request | cumulative µs/request | share of otel_crm's total |",
              "|---|---:|---:|---:|"]
    own = sorted(((k, v) for k, v in crm.items() if "/otel_crm/" in k[0]), key=lambda kv: -kv[1][2])
    for key, (calls, _tt, ct) in own[:12]:
        lines.append(f"| {_where(key)} | {calls / requests:.1f} | {ct / requests * 1e6:.1f} | "
                     f"{ct / total_crm * 100:.1f}% |")
    lines += ["", "Own time that grows most from upstream to otel_crm (per request, any module):", "",
              "| function | upstream µs | otel_crm µs | delta |", "|---|---:|---:|---:|"]
    deltas = []
    for key in set(crm) | set(up):
        a = up.get(key, (0, 0.0, 0.0))[1] / requests * 1e6
        b = crm.get(key, (0, 0.0, 0.0))[1] / requests * 1e6
        deltas.append((b - a, key, a, b))
    for delta, key, a, b in sorted(deltas, key=lambda d: -d[0])[:12]:
        lines.append(f"| {_where(key)} | {a:.1f} | {b:.1f} | +{delta:.1f} |")
    return "\n".join(lines)


# --- report -----------------------------------------------------------------------------------------

def summarize(results: Results, measure: str) -> dict[str, dict[str, float]]:
    """{arm: {path or 'mix': median µs}}; mix = mean of the per-path medians (an even request mix)."""
    out: dict[str, dict[str, float]] = {}
    for arm, data in results.items():
        per = {p: median(data[measure][p]) for p in PATHS}
        per["mix"] = sum(per[p] for p in PATHS) / len(PATHS)
        out[arm] = per
    return out


def spread(results: Results, measure: str, arm: str) -> str:
    """min-max over rounds of the arm's mix (per-round mean of the paths): the noise to read a ratio against."""
    rounds = len(results[arm][measure][PATHS[0]])
    mixes = [sum(results[arm][measure][p][r] for p in PATHS) / len(PATHS) for r in range(rounds)]
    return f"{min(mixes):.0f}–{max(mixes):.0f}"


def round_ratios(results: Results, measure: str, num: str, den: str) -> list[float]:
    rounds = len(results[num][measure][PATHS[0]])
    return [sum(results[num][measure][p][r] for p in PATHS) / sum(results[den][measure][p][r] for p in PATHS)
            for r in range(rounds)]


def judge(round_ratios_: list[float], goal: float) -> tuple[str, str]:
    """The verdict on a ratio goal from the per-round ratios (each round's arms ran back to back):
    met when the whole 95% interval of their median is at or under the goal, missed when it is all
    above, undecided when the interval straddles it (more rounds narrow it). With fewer than 6
    rounds there is no interval: the median alone decides, and the verdict says so."""
    try:
        low, high = median_ci(round_ratios_)
    except ValueError:
        mid = median(round_ratios_)
        return ("meets" if mid <= goal else "misses") + f", {len(round_ratios_)} rounds: no interval", "[—]"
    interval = f"[{low:.2f}–{high:.2f}]"
    if high <= goal:
        return "meets", interval
    if low > goal:
        return "misses", interval
    return "undecided", interval


def table(results: Results, all_arms: list[Arm], cpu_label: str) -> list[str]:
    all_arms = [a for a in all_arms if a.name in results]
    wall, cpu = summarize(results, "wall_us"), summarize(results, "cpu_us")
    lines = ["| arm | " + " | ".join(f"{p} {cpu_label} µs" for p in PATHS) + f" | mix {cpu_label} µs | "
             "mix range over rounds | mix wall µs |", "|---|" + "---:|" * (len(PATHS) + 3)]
    for arm in all_arms:
        c = cpu[arm.name]
        lines.append(f"| {arm.name} | " + " | ".join(f"{c[p]:.0f}" for p in PATHS)
                     + f" | {c['mix']:.0f} | {spread(results, 'cpu_us', arm.name)} | {wall[arm.name]['mix']:.0f} |")
    lines += ["", f"| ratio ({cpu_label}) | " + " | ".join(PATHS) + " | mix | per-round mix ratios: median "
              "[95% interval] (min–max) | goal |",
              "|---|" + "---:|" * (len(PATHS) + 2) + "---|"]
    for num, den, goal in PAIRS:
        if num not in cpu or den not in cpu:
            continue
        per = [cpu[num][p] / cpu[den][p] for p in PATHS]
        mix = cpu[num]["mix"] / cpu[den]["mix"]
        rr = round_ratios(results, "cpu_us", num, den)
        verdict, interval = judge(rr, goal)
        lines.append(f"| {num} / {den} | " + " | ".join(f"{x:.2f}" for x in per)
                     + f" | **{mix:.2f}** | {median(rr):.2f} {interval} ({min(rr):.2f}–{max(rr):.2f}) "
                       f"| ≤ {goal} ({verdict}) |")
    extra = [a for a in all_arms if a.name.startswith(("crm-", "crm@"))]
    if extra:
        lines += ["", "Baseline and what-if arms (otel_crm of an earlier commit; diagnosis-only settings):", "",
                  f"| arm | what | mix {cpu_label} µs | / upstream-grpc | / bare | / otel_crm-grpc |",
                  "|---|---|---:|---:|---:|---:|"]
        for arm in extra:
            mix = cpu[arm.name]["mix"]
            lines.append(f"| {arm.name} | {arm.doc} | {mix:.0f} | {mix / cpu['upstream-grpc']['mix']:.2f} | "
                         f"{mix / cpu['bare']['mix']:.2f} | {mix / cpu['otel_crm-grpc']['mix']:.2f} |")
    return lines


def headline(results: Results, label: str) -> str:
    def part(num: str, den: str, goal: float) -> str:
        """The median per-round ratio, its interval and the verdict they give (the table's column)."""
        rr = round_ratios(results, "cpu_us", num, den)
        verdict, interval = judge(rr, goal)
        protocol = "gRPC" if num.endswith("grpc") else "HTTP"
        return f"{median(rr):.2f}x {interval} {protocol} ({verdict})"

    return (f"{label}: otel_crm/upstream {part('otel_crm-grpc', 'upstream-grpc', GOAL_VS_UPSTREAM)}, "
            f"{part('otel_crm-http', 'upstream-http', GOAL_VS_UPSTREAM)} (goal ≤ {GOAL_VS_UPSTREAM}); "
            f"otel_crm/bare {part('otel_crm-grpc', 'bare', GOAL_VS_BARE)}, "
            f"{part('otel_crm-http', 'bare', GOAL_VS_BARE)} (goal ≤ {GOAL_VS_BARE})")


def report(args: argparse.Namespace, all_arms: list[Arm], inproc: Results | None, httpv: Results | None,
           profile: str, load: tuple[float, float], seconds: float, gunicornv: Results | None = None) -> str:
    cmd = ".venv/bin/python bench/bench_requests.py"
    summary = []
    if inproc:
        summary.append(headline(inproc, "in-process CPU"))
    if httpv:
        summary.append(headline(httpv, "HTTP server CPU (werkzeug)"))
    if gunicornv:
        summary.append(headline(gunicornv, "HTTP server CPU (gunicorn)"))
    lines = [
        "# Requests: a Flask app, uninstrumented vs upstream distro vs otel_crm, gRPC and HTTP export", "",
        f"<!-- summary: {'; '.join(summary)} -->", "",
        f"Reproduce: `{cmd}` (writes this file; `--quick` for a smoke run, `--diagnose` adds what-if arms; "
        "`make bench` runs every bench).",
        "",
        f"Machine: {machine_summary()}. Load average before/after the run: {load[0]:.1f} / {load[1]:.1f} "
        f"(other work on the machine inflates wall times; CPU time is the steadier figure). "
        f"Run took {seconds / 60:.1f} min. Versions: " + versions() + ".",
        "",
        "Arms — all exporting to the same real collector (otelcol-crm, `bench/collector-null.yaml`: "
        "receive on gRPC and HTTP, discard):", "",
    ]
    lines += [f"- **{a.name}**: {a.doc}" for a in all_arms]
    lines += ["",
              "Method: arms interleaved, order rotating each round; figures are medians over rounds. "
              "A goal's verdict comes from the per-round ratios (the arms of a round run back to back): "
              "**meets** when the whole 95% interval of their median (distribution-free: the k-th smallest "
              "to the k-th largest round, `bench/_common.py` `median_ci`) is at or under the goal, "
              "**misses** when it is all above, **undecided** when it straddles the goal — this machine's "
              "noise, not a result; more rounds narrow it. "
              "The app is `bench/_bench_app.py` (the Flask example plus a route). Requests are GET `/ok` "
              f"(JSON, no I/O), GET `/leads` (one SQLAlchemy select on in-memory SQLite, {SEED_LEADS} leads "
              "seeded) and GET `/report` (four SQL statements: a request with several child spans); each "
              f"carries `X-Tenant-ID` from {len(TENANTS)} tenants in turn. `mix` is the mean of the three "
              "paths. Every timed window ends with a force_flush of spans and log records (exported before "
              "the clock stops); metrics export at the production interval (60 s). Apps' stdout/stderr go "
              "to a file; PYTHONUNBUFFERED unset; SDK defaults for batch delays.", ""]
    if inproc:
        lines += ["## In-process (Flask test client, no HTTP server)", "",
                  f"{args.rounds} rounds × a fresh process per arm; each process warms up "
                  f"({args.warmup} requests per path), then times {args.inproc_requests} requests per path "
                  f"in {args.blocks} blocks (median of blocks). CPU = process CPU time, all threads "
                  "(export threads included).", ""]
        lines += table(inproc, all_arms, "cpu")
        lines.append("")
    if httpv:
        lines += ["## Over HTTP (werkzeug's development server, loopback client)", "",
                  f"The apps run side by side (`python bench/_bench_app.py`, under `opentelemetry-instrument` "
                  f"for the instrumented arms); this process sends {args.http_requests} GETs per path per arm "
                  f"per round through one `http.client` connection object (werkzeug's dev server closes every "
                  f"connection, so each request opens a new one and runs on a new server thread), "
                  f"{args.rounds} rounds after "
                  f"{args.warmup} warm-up requests per path. Server cpu = the app process's CPU time "
                  "(all threads) per request; wall = client-observed latency. Werkzeug's own per-request "
                  "work (and its request log line: stderr for bare, an OTLP log record for upstream, the JSON "
                  "access line for otel_crm) dilutes or adds to the ratios.", ""]
        lines += table(httpv, [a for a in all_arms if a.name in httpv], "server cpu")
        lines.append("")
    if gunicornv:
        lines += ["## Over HTTP (gunicorn, one sync worker)", "",
                  "The same apps served as production serves them: `gunicorn --workers 1 "
                  "_bench_app:create_bench_app()` (under `opentelemetry-instrument` for the instrumented arms, "
                  "so otel_crm and the SDK go through gunicorn's fork of the worker); the same requests, "
                  f"{args.http_requests} per path per arm per round, {args.rounds} rounds. A sync worker has no "
                  "thread per request and closes each connection. Server cpu = the master's and the worker's "
                  "CPU time per request; gunicorn writes no access line by default.", ""]
        lines += table(gunicornv, [a for a in all_arms if a.name in gunicornv], "server cpu")
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
    parser.add_argument("--rounds", type=int, default=9,
                        help="at least 6 for a 95%% interval of the median per-round ratio (9: its 2nd to 8th)")
    parser.add_argument("--inproc-requests", type=int, default=800, help="per path per process")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--http-requests", type=int, default=500, help="per path per arm per round")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--variants", default="inproc,http,gunicorn", help="inproc, http (werkzeug), gunicorn")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--diagnose", action="store_true", help="add the what-if otel_crm arms (in-process)")
    parser.add_argument("--baseline", default="", help="label=gitref,...: add in-process otel_crm-grpc arms "
                        "running otel_crm as of each ref (before/after in one run)")
    parser.add_argument("--output", default=str(DOCS / "bench-requests.md"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.inproc_requests, args.http_requests, args.warmup = 2, 400, 200, 100
    variants = set(args.variants.split(","))
    started = time.monotonic()
    load0 = os.getloadavg()[0]
    logdir = Path(tempfile.mkdtemp(prefix="otel-crm-bench-requests-"))
    print(f"bench_requests: logs in {logdir}", flush=True)
    main_arms = arms(False)
    inproc_arms = arms(args.diagnose) + baseline_arms(args.baseline, logdir)
    inproc = httpv = gunicornv = None
    profile = ""
    with NullCollector() as collector:
        endpoints = {"grpc": collector.grpc_endpoint, "http": collector.http_endpoint}
        if "inproc" in variants:
            inproc = inproc_variant(inproc_arms, endpoints, logdir, args.rounds, args.inproc_requests,
                                    args.blocks, args.warmup)
        if "http" in variants:
            httpv = http_variant(main_arms, endpoints, logdir, args.rounds, args.http_requests, args.warmup)
        if "gunicorn" in variants:
            gunicornv = http_variant(main_arms, endpoints, logdir, args.rounds, args.http_requests, args.warmup,
                                     "gunicorn")
        if not args.no_profile and not args.quick:
            profile = profile_arms(main_arms, endpoints, logdir, min(args.inproc_requests, 1000))
    text = report(args, inproc_arms if inproc else main_arms, inproc, httpv, profile,
                  (load0, os.getloadavg()[0]), time.monotonic() - started, gunicornv)
    print(text)
    if not args.quick:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
