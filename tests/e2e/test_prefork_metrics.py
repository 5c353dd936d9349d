"""`/metrics` under gunicorn: the port's owner (the master) serves the sum of all its workers.

Real gunicorn, real `opentelemetry-instrument`, the Flask example; sync and gthread workers, with
and without --preload. Requests are spread over 4 workers (each worker's own share is read from
its private socket, so the spread is checked, not assumed); the scrape must sum to what was sent.
One worker is stopped gracefully and another SIGKILLed: their counts stay in the sum.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from otel_crm._internal.prometheus import rendezvous_dir
from tests.conftest import App, start_app
from tests.e2e.stack import http_get, metric_sum, parse_prometheus
from tests.support.processes import ROOT, free_port, wait_until

pytestmark = pytest.mark.e2e

N = 120
WORKERS = 4


def _gunicorn(tmp_path: Path, worker_class: str, preload: bool, metrics_port: int) -> App:
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    port = free_port()
    argv = [gunicorn, "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS), "--worker-class", worker_class,
            *(["--threads", "2"] if worker_class == "gthread" else []),
            "--graceful-timeout", "10", "--chdir", str(ROOT / "examples" / "flask_crm"),
            *(["--preload"] if preload else []), "app:create_app()"]
    env = {"OTEL_SERVICE_NAME": "prefork-metrics", "OTEL_TRACES_EXPORTER": "none",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", "OTEL_CRM_ACCESS_LOG": "false",
           "OTEL_CRM_PROMETHEUS_PORT": str(metrics_port), "PYTHONUNBUFFERED": "1"}
    return start_app(tmp_path, argv, env, name="gunicorn", port=port)


def _scrape(port: int) -> list:  # type: ignore[type-arg]
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return parse_prometheus(body.decode())


def _per_worker_requests(metrics_port: int) -> dict[int, float]:
    """Each live worker's own count, asked for on its private socket (what the master merges)."""
    counts = {}
    for path in rendezvous_dir("127.0.0.1", metrics_port).glob("*.sock"):
        if path.name == "owner.sock":
            continue
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(5)
            try:
                conn.connect(str(path))
                data = b"".join(iter(lambda: conn.recv(65536), b""))
            except OSError:
                continue  # exiting right now, or killed
        if not data:
            continue  # killed after accepting
        message = json.loads(data)
        counts[message["pid"]] = sum(value for family in message["families"] if family["name"] == "crm_requests"
                                     for name, labels, value in family["samples"]
                                     if labels.get("http_route") == "/ok")
    return counts


def _send(app: App, n: int) -> None:
    # Short sleeps make requests overlap, so every sync worker gets some.
    def one(i: int) -> int:
        with requests.Session() as fresh:
            path = "/slow?seconds=0.02" if i % 4 == 0 else "/ok"
            return fresh.get(app.url(path), timeout=20).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(n))) == [200] * n


def _ok_requests(samples: list) -> float:  # type: ignore[type-arg]
    return metric_sum(samples, "crm_requests_total", http_route="/ok")


@pytest.mark.parametrize(("worker_class", "preload"), [("sync", True), ("sync", False), ("gthread", True),
                                                       ("gthread", False)],
                         ids=["sync-preload", "sync", "gthread-preload", "gthread"])
def test_scrape_sums_every_worker(tmp_path: Path, worker_class: str, preload: bool) -> None:
    metrics_port = free_port()
    app = _gunicorn(tmp_path, worker_class, preload, metrics_port)
    try:
        sent_ok = sum(1 for i in range(N) if i % 4)
        # A scrape before traffic: the owner must see its workers, not only itself.
        wait_until(lambda: len(_per_worker_requests(metrics_port)) == WORKERS, 30, f"{WORKERS} workers registered")
        _send(app, N)
        per_worker = _per_worker_requests(metrics_port)
        assert sum(1 for n in per_worker.values() if n > 0) >= 2, f"requests not spread: {per_worker}"

        samples = _scrape(metrics_port)
        assert _ok_requests(samples) == sent_ok, "crm_requests_total summed over workers"
        hist = {name: metric_sum(samples, name, http_route="/ok") for name in (
            "crm_request_duration_seconds_count", "crm_request_duration_seconds_sum")}
        assert hist["crm_request_duration_seconds_count"] == sent_ok
        assert metric_sum(samples, "crm_request_duration_seconds_bucket", http_route="/ok", le="+Inf") == sent_ok
        slow = metric_sum(samples, "crm_request_duration_seconds_count", http_route="/slow")
        assert slow == N - sent_ok
        # bucket by bucket: cumulative buckets stay monotonic after the merge
        buckets = sorted((float(s.labels["le"]), s.value) for s in samples
                          if s.name == "crm_request_duration_seconds_bucket" and s.labels.get("http_route") == "/slow")
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)
        assert buckets[0][1] == 0 and buckets[-1][1] == N - sent_ok, buckets  # all slow ones >= 20 ms
        # gauges stay per process, under a worker label
        workers = {s.labels["worker"] for s in samples if s.name == "process_resident_memory_bytes"}
        assert str(app.process.proc.pid) in workers and len(workers) >= 3, workers  # master and workers

        # A worker that exits (gunicorn's TTOU: one fewer worker, stopped gracefully) pushes its final
        # counts to the master: the sum does not move.
        os.kill(app.process.proc.pid, signal.SIGTTOU)
        wait_until(lambda: len(_per_worker_requests(metrics_port)) == WORKERS - 1, 30, "one worker fewer")
        assert _ok_requests(_scrape(metrics_port)) == sent_ok
        # A worker killed without warning: its counts (as of the last scrape) stay, and stop growing.
        victim = max(_per_worker_requests(metrics_port).items(), key=lambda item: item[1])[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in _per_worker_requests(metrics_port), 20, "the killed worker gone")
        assert _ok_requests(_scrape(metrics_port)) == sent_ok
        wait_until(lambda: len(_per_worker_requests(metrics_port)) == WORKERS - 1, 30, "a replacement worker")
        _send(app, 40)
        assert _ok_requests(_scrape(metrics_port)) == sent_ok + 30
    finally:
        app.process.stop(timeout=20)
    assert not rendezvous_dir("127.0.0.1", metrics_port).exists(), "nothing left on disk after shutdown"
