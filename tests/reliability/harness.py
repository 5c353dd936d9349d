"""Run the reliability app, load it at a fixed rate, read what it produced, exported and counted.

The app (app.py) runs as its own process, not under pytest. Counted drops are read where an
operator reads them: otel_crm's Prometheus endpoint (`crm_telemetry_dropped_total`, scraped just
before SIGTERM) plus the one line otel_crm prints at exit for what it dropped then.
"""

from __future__ import annotations

import http.client
import json
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.processes import ROOT, ManagedProcess, free_port, http_ok, wait_until

__all__ = ["AppRun", "Load", "Sample", "percentile", "prometheus_samples", "settle"]

APP = ROOT / "tests" / "reliability" / "app.py"
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_EXIT_LINE = re.compile(r"dropped (\d+) traces, (\d+) logs, (\d+) metrics")


def prometheus_samples(text: str, prefix: str = "crm_telemetry_") -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and match.group(1).startswith(prefix):
            labels = dict(_LABEL.findall(match.group(2) or ""))
            out.append((match.group(1), labels, float(match.group(3))))
    return out


def settle(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    """Poll `predicate` until true or `timeout` (tests.support's wait_until); False on timeout, so
    a scenario reports the gap instead of stopping."""
    try:
        wait_until(predicate, timeout, "the scenario's condition", interval)
    except TimeoutError:
        return False
    return True


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Sample:
    started: float
    latency: float
    status: int


@dataclass
class Load:
    """Open-loop load: one `GET /work` every 1/rate seconds whatever the answers take (so a slow
    app shows up as latency, not as a lower rate)."""

    port: int
    rate: float
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _one(self) -> None:
        started = time.monotonic()
        status = 0
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/work")
            status = conn.getresponse().status
            conn.close()
        except OSError:
            status = 0
        self.samples.append(Sample(started, time.monotonic() - started, status))

    def _run(self) -> None:
        with ThreadPoolExecutor(max_workers=16) as pool:
            begin = time.monotonic()
            sent = 0
            while not self._stop.is_set():
                due = begin + sent / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                    continue
                pool.submit(self._one)
                sent += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.started < end]


class AppRun:
    """One app process: started with `env`, stopped with SIGTERM; what it says at exit parsed."""

    def __init__(self, work: Path, env: dict[str, str], name: str = "app"):
        self.port = free_port()
        self.prometheus_port = free_port()
        full = {"CRM_PORT": str(self.port), "OTEL_CRM_PROMETHEUS_PORT": str(self.prometheus_port),
                "OTEL_SERVICE_NAME": "reliability", "OTEL_CRM_SAMPLING_MODE": "off",
                "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                "OTEL_CRM_SHUTDOWN_TIMEOUT_SECONDS": "3", "PYTHONUNBUFFERED": "1", **env}
        self.env = full
        self.process = ManagedProcess(name, [sys.executable, str(APP)], env=full, log_dir=work)
        self.process.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{self.port}/health"), timeout=60)
        self.exit_seconds: float | None = None
        self.returncode: int | None = None

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as response:
            return dict(json.loads(response.read()))

    def dropped(self) -> dict[tuple[str, str], float]:
        """crm.telemetry.dropped by (signal, reason), from the Prometheus endpoint."""
        url = f"http://127.0.0.1:{self.prometheus_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        out: dict[tuple[str, str], float] = {}
        for name, labels, value in prometheus_samples(text):
            if name.startswith("crm_telemetry_dropped") and not name.endswith("_created"):
                key = (labels.get("crm_signal", "?"), labels.get("crm_drop_reason", "?"))
                out[key] = out.get(key, 0.0) + value
        return out

    def terminate(self, timeout: float) -> None:
        """SIGTERM; SIGKILL if the process is still alive after `timeout` seconds."""
        self.exit_seconds = self.process.stop(timeout=timeout)
        self.returncode = self.process.proc.returncode

    def produced(self) -> dict[str, int]:
        for line in self.process.output().splitlines():
            if line.startswith("RELIABILITY "):
                return dict(json.loads(line[len("RELIABILITY "):])["produced"])
        return {}

    def ledger(self) -> dict[str, dict[str, Any]]:
        """otel_crm's settled export ledger, printed by the app after otel_crm's exit flush (only
        when the app exits through atexit: RELIABILITY_SIGTERM=app)."""
        for line in self.process.output().splitlines():
            if line.startswith("RELIABILITY-LEDGER "):
                return dict(json.loads(line[len("RELIABILITY-LEDGER "):]))
        return {}

    def exit_dropped(self) -> dict[str, int]:
        """What otel_crm's exit line says it dropped at exit (none: it printed no line)."""
        match = _EXIT_LINE.search(self.process.output())
        if match is None:
            return {}
        return {"traces": int(match.group(1)), "logs": int(match.group(2)), "metrics": int(match.group(3))}

    def tracebacks(self) -> int:
        return self.process.output().count("Traceback (most recent call last)")
