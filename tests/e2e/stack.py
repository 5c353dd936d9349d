"""Real otelcol-crm / Jaeger processes on loopback for the e2e tests.

Everything binds 127.0.0.1 on free ports chosen here and passed through the env
vars the shipped configs read (`${env:VAR:-default}`), so the tests run the
exact files users deploy. Health is polled with bounded deadlines; processes are
stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ROOT, ManagedProcess, free_port, http_ok, tcp_open, wait_until

CONFIGS = ROOT / "collector-config"

__all__ = [
    "CONFIGS", "ROOT", "CollectorProc", "JaegerProc", "Sample", "binary", "collector_keeps", "fnv1a64",
    "free_port", "ids_by_decision", "parse_prometheus", "wait_until",
]


def binary(env_var: str, name: str, make_target: str) -> Path:
    """The built binary, or a test failure that says which make target builds it (never a skip)."""
    path = Path(os.environ.get(env_var) or ROOT / "build" / name)
    if not (path.exists() and os.access(path, os.X_OK)):
        pytest.fail(f"{name} binary {path} is missing: run `make {make_target}` (`make test` does it)",
                    pytrace=False)
    return path


def run(argv: Sequence[str], env: Mapping[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT))


# --- HTTP / Prometheus text ------------------------------------------------------------------------

def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[Sample]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = {k: bytes(v, "utf-8").decode("unicode_escape") for k, v in _LABEL.findall(m.group(3) or "")}
        out.append(Sample(m.group(1), labels, float(m.group(4))))
    return out


def metric_sum(samples: Iterable[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


# --- processes ---------------------------------------------------------------------------------------

@dataclass
class JaegerProc:
    """Jaeger v2 all-in-one with collector-config/jaeger.yaml (in-memory store)."""

    log_dir: Path
    otlp_grpc_port: int = field(default_factory=free_port)
    otlp_http_port: int = field(default_factory=free_port)
    query_port: int = field(default_factory=free_port)
    query_grpc_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    telemetry_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def otlp_endpoint(self) -> str:
        return f"127.0.0.1:{self.otlp_grpc_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.query_port}/api"

    def start(self) -> JaegerProc:
        env = {
            "JAEGER_OTLP_GRPC_ENDPOINT": self.otlp_endpoint,
            "JAEGER_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self.otlp_http_port}",
            "JAEGER_QUERY_HTTP_ENDPOINT": f"127.0.0.1:{self.query_port}",
            "JAEGER_QUERY_GRPC_ENDPOINT": f"127.0.0.1:{self.query_grpc_port}",
            "JAEGER_HEALTH_ENDPOINT": f"127.0.0.1:{self.health_port}",
            "JAEGER_TELEMETRY_PORT": str(self.telemetry_port),
        }
        exe = binary("JAEGER_BIN", "jaeger", "jaeger")
        self.process = ManagedProcess("jaeger", [str(exe), "--config", str(CONFIGS / "jaeger.yaml")], env=env,
                                      log_dir=self.log_dir)
        self.process.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{self.health_port}/status")
                                  and http_ok(f"{self.api}/services") and tcp_open(self.otlp_grpc_port))
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    # Jaeger query API (/api/traces?service=…, /api/traces/{id}).
    def services(self) -> list[str]:
        _, body = http_get(f"{self.api}/services")
        return json.loads(body).get("data") or []

    def traces(self, service: str, limit: int = 1000) -> list[dict[str, Any]]:
        status, body = http_get(f"{self.api}/traces?service={service}&lookback=1h&limit={limit}")
        if status != 200:
            return []
        return json.loads(body).get("data") or []

    def trace(self, trace_id: int) -> dict[str, Any] | None:
        status, body = http_get(f"{self.api}/traces/{trace_id:032x}")
        if status == 404:
            return None
        assert status == 200, f"GET /api/traces/{trace_id:032x}: {status} {body[:300]!r}"
        data = json.loads(body).get("data") or []
        return data[0] if data else None


@dataclass
class CollectorProc:
    """otelcol-crm with one of the shipped configs and every port from env vars."""

    log_dir: Path
    config: Path
    name: str = "otelcol"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    prometheus_port: int = field(default_factory=free_port)
    telemetry_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> CollectorProc:
        env = {
            "OTELCOL_OTLP_GRPC_ENDPOINT": self.grpc_endpoint,
            "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self.http_port}",
            "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{self.health_port}",
            "OTELCOL_PROMETHEUS_ENDPOINT": f"127.0.0.1:{self.prometheus_port}",
            "OTELCOL_TELEMETRY_HOST": "127.0.0.1",
            "OTELCOL_TELEMETRY_PORT": str(self.telemetry_port),
            "OTELCOL_LOGS_FILE": str(self.log_dir / f"{self.name}-app-logs.jsonl"),
            **self.extra_env,
        }
        exe = binary("OTELCOL_BIN", "otelcol-crm", "collector")
        self.process = ManagedProcess(self.name, [str(exe), "--config", str(self.config)], env=env,
                                      log_dir=self.log_dir)
        self.process.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{self.health_port}/")
                                  and tcp_open(self.grpc_port))
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def self_metrics(self) -> list[Sample]:
        """The collector's own telemetry (service.telemetry prometheus reader)."""
        _, body = http_get(f"http://127.0.0.1:{self.telemetry_port}/metrics")
        return parse_prometheus(body.decode())

    def exported_metrics(self) -> list[Sample]:
        """What the `prometheus` exporter serves (spanmetrics, app metrics)."""
        _, body = http_get(f"http://127.0.0.1:{self.prometheus_port}/metrics")
        return parse_prometheus(body.decode())


# --- collector probabilistic policy arithmetic ------------------------------------------------------

MAX_U64 = 2**64 - 1
DEFAULT_HASH_SALT = "default-hash-seed"


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & MAX_U64
    return h


def _threshold(percentage: float) -> int:
    """tailsamplingprocessor calculateThreshold: big.Float(MaxUint64, 64-bit mantissa) x ratio, truncated."""
    exact = Fraction(MAX_U64) * Fraction(percentage / 100)
    if exact <= 0:
        return 0
    # round the exact product to a 64-bit mantissa (nearest-even), like big.Float's Mul at prec 64
    e = exact.numerator.bit_length() - exact.denominator.bit_length()
    while Fraction(2) ** e > exact:
        e -= 1
    while Fraction(2) ** (e + 1) <= exact:
        e += 1
    scale = Fraction(2) ** (63 - e)
    mant = exact * scale
    floor = mant.numerator // mant.denominator
    rem = mant - floor
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and floor % 2 == 1):
        floor += 1
    value = Fraction(floor) / scale
    return min(int(value), MAX_U64)


def collector_keeps(trace_id: int, percentage: float = 10, salt: str = DEFAULT_HASH_SALT) -> bool:
    """The collector's `probabilistic` policy: FNV-1a 64 over salt + trace id bytes ≤ threshold."""
    return fnv1a64(salt.encode() + trace_id.to_bytes(16, "big")) <= _threshold(percentage)


def ids_by_decision(rng: random.Random, kept: int, dropped: int, percentage: float = 10,
                    salt: str = DEFAULT_HASH_SALT) -> tuple[list[int], list[int]]:
    """Random 128-bit trace ids the probabilistic policy keeps / drops, away from the threshold edge."""
    thr = _threshold(percentage)
    margin = MAX_U64 // 1000
    keep: list[int] = []
    drop: list[int] = []
    while len(keep) < kept or len(drop) < dropped:
        tid = rng.getrandbits(128) | (1 << 120)  # high half non-zero: Jaeger prints 32 hex digits
        h = fnv1a64(salt.encode() + tid.to_bytes(16, "big"))
        if h <= thr - margin and len(keep) < kept:
            keep.append(tid)
        elif h > thr + margin and len(drop) < dropped:
            drop.append(tid)
    return keep, drop


def poll(fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Call fn until it returns a truthy value; return it (bounded deadline, no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"[:2000])
