"""Shared helpers for the bench scripts: machine facts, medians, free ports, and a real
otelcol-crm on loopback that receives OTLP and discards it (bench/collector-null.yaml)."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Loopback process helpers are shared with the tests: one implementation of each.
from tests.support.processes import free_port, http_ok, tcp_open, wait_until

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DOCS = ROOT / "docs"
VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable

# The request benchmark's paths (bench/_bench_app.py), leads seeded, and the tenants its requests
# carry in X-Tenant-ID, in turn.
REQUEST_PATHS = ("/ok", "/leads", "/report")
SEED_LEADS = 5
TENANTS = tuple(f"tenant-{i:02d}" for i in range(20))

__all__ = [
    "BENCH",
    "DOCS",
    "PYTHON",
    "REQUEST_PATHS",
    "ROOT",
    "SEED_LEADS",
    "TENANTS",
    "VENV_BIN",
    "NullCollector",
    "clean_env",
    "cpu_model",
    "free_port",
    "http_ok",
    "machine_summary",
    "median",
    "median_ci",
    "tcp_open",
    "wait_until",
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_summary() -> str:
    return (f"{os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()} "
            f"({platform.python_implementation()}), {platform.system()} {platform.release()}")


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def median_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median: the k-th smallest and k-th largest
    of n values, k the largest rank with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2, so the
    interval covers the median with at least `confidence` whatever the noise's shape. Needs n >= 6
    at 95% (with fewer, even min-max covers less); raises ValueError below that."""
    ordered = sorted(values)
    n = len(ordered)
    tail = (1.0 - confidence) / 2
    k, below = 0, 0.0  # below = P(Binomial(n, 1/2) < k), grown one rank at a time
    while below + math.comb(n, k) / 2**n <= tail:
        below += math.comb(n, k) / 2**n
        k += 1
    if k == 0:
        raise ValueError(f"{n} values are too few for a {confidence:.0%} interval of the median")
    return ordered[k - 1], ordered[n - k]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent environment without any OTEL_* / OTEL_CRM_* / CRM_* variable (a developer's shell
    must not change an arm), plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "CRM_")) and k not in ("PYTHONPATH",)}
    env.update(extra or {})
    return env


class NullCollector:
    """The real collector binary on free loopback ports, discarding everything it receives."""

    def __init__(self, binary: Path | None = None, config: Path = BENCH / "collector-null.yaml"):
        self.binary = Path(os.environ.get("OTELCOL_BIN", binary or ROOT / "build" / "otelcol-crm"))
        self.config = config
        self.grpc_port = self.http_port = self.health_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_dir = tempfile.mkdtemp(prefix="otel-crm-bench-collector-")
        self.log_path = Path(self._log_dir) / "otelcol.log"

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def __enter__(self) -> NullCollector:
        if not self.binary.exists():
            raise SystemExit(f"collector binary {self.binary} is missing: run `make collector`")
        self.grpc_port, self.http_port, self.health_port = free_port(), free_port(), free_port()
        env = clean_env({"BENCH_OTLP_GRPC_PORT": str(self.grpc_port),
                         "BENCH_OTLP_HTTP_PORT": str(self.http_port),
                         "BENCH_HEALTH_PORT": str(self.health_port)})
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(self.binary), "--config", str(self.config)], env=env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def healthy() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"collector exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            return http_ok(f"http://127.0.0.1:{self.health_port}/") and tcp_open(self.grpc_port)

        wait_until(healthy, 30, "the collector to become healthy")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
