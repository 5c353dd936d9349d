"""Every span, log record and metric data point accounted for, against the real collector.

An app (tests/integration/accounting_app.py, otel_crm.configure()) makes one span and one log
record per tick and pushes metrics every 500 ms. The collector is stopped mid-load until the app
has counted failed exports, then restarted on the same ports; at the end the app's own count, the
collector's files and the app's ledger (otel_crm.testing.telemetry_accounting(), written after the
exit flush) must agree exactly: produced = exported + counted drops, exported = what the
collector wrote. The same run measures recovery: from the restarted collector being healthy to
the first span ended after that moment arriving in its file (docs/telemetry.md).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import otelcol_binary
from tests.support.otlp_files import read_logs, read_metrics, read_spans
from tests.support.processes import ROOT, ManagedProcess, free_port, http_ok, tcp_open, wait_until

pytestmark = pytest.mark.integration

APP = ROOT / "tests" / "integration" / "accounting_app.py"
RATE = 50  # spans (and log records) per second
RECOVERY_LIMIT_SECONDS = 3.0
# The defaults measure the documented figures; both can be raised to measure longer outages.
EXPORT_TIMEOUT_MS = os.environ.get("ACCOUNTING_EXPORT_TIMEOUT_MS", "10000")  # the default
OUTAGE_SECONDS = float(os.environ.get("ACCOUNTING_OUTAGE_SECONDS", "8"))


class RestartableCollector:
    """The file collector on fixed ports, stopped and started again; each run writes to its own
    directory (the file exporter truncates its file when it starts)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.grpc_port, self.http_port, self.health_port = free_port(), free_port(), free_port()
        self.runs: list[Path] = []
        self.process: ManagedProcess | None = None

    def start(self) -> float:
        """Start a run; returns the wall-clock time it became healthy."""
        out = self.tmp_path / f"collector-run{len(self.runs)}"
        out.mkdir()
        env = {"TEST_OTLP_GRPC_PORT": str(self.grpc_port), "TEST_OTLP_HTTP_PORT": str(self.http_port),
               "TEST_HEALTH_PORT": str(self.health_port), "TEST_OUTPUT_DIR": str(out)}
        self.process = ManagedProcess(f"otelcol-run{len(self.runs)}", [
            str(otelcol_binary()), "--config", str(ROOT / "tests" / "integration" / "collector-file.yaml")],
            env=env, log_dir=self.tmp_path)
        self.process.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{self.health_port}/")
                                  and tcp_open(self.grpc_port) and tcp_open(self.http_port))
        self.runs.append(out)
        return time.time()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()  # SIGTERM: the collector writes what it acknowledged, then exits
            self.process = None

    def endpoint(self, protocol: str) -> str:
        return f"http://127.0.0.1:{self.grpc_port if protocol == 'grpc' else self.http_port}"

    def spans(self) -> list[Any]:
        return [s for run in self.runs for s in read_spans(run / "traces.jsonl")]

    def logs(self) -> list[Any]:
        return [r for run in self.runs for r in read_logs(run / "logs.jsonl")]

    def metric_points(self) -> list[Any]:
        return [p for run in self.runs for p in read_metrics(run / "metrics.jsonl")]


def start_app(tmp_path: Path, endpoint: str, protocol: str, **extra: str) -> tuple[ManagedProcess, Path, Path]:
    status, stop = tmp_path / "status.json", tmp_path / "stop"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
           "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200",
           "OTEL_METRIC_EXPORT_INTERVAL": "500", "OTEL_EXPORTER_OTLP_TIMEOUT": EXPORT_TIMEOUT_MS,
           "OTEL_CRM_LOG_FORMAT": "none", "OTEL_CRM_SHUTDOWN_TIMEOUT_SECONDS": "3", "PYTHONUNBUFFERED": "1",
           **extra}
    process = ManagedProcess("accounting_app", [sys.executable, str(APP), str(status), str(stop), str(RATE)],
                             env=env, log_dir=tmp_path)
    return process, status, stop


def read_status(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def dropped(status: dict[str, Any], signal: str, reason: str) -> int:
    return int(status.get("ledger", {}).get(signal, {}).get("dropped", {}).get(reason, 0))


def finish(process: ManagedProcess, stop: Path, status_path: Path, timeout: float = 15) -> dict[str, Any]:
    stop.touch()
    process.proc.wait(timeout)
    process.stop()
    status = read_status(status_path)
    assert status.get("final"), process.output()[-3000:]
    return status


def check_balanced(ledger: dict[str, Any]) -> None:
    for signal, tally in ledger.items():
        assert tally["pending"] == 0, (signal, tally)
        assert tally["produced"] == tally["exported"] + sum(tally["dropped"].values()), (signal, tally)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_outage_every_item_is_exported_or_counted_and_exports_resume_quickly(
        tmp_path: Path, protocol: str) -> None:
    collector = RestartableCollector(tmp_path)
    collector.start()
    app, status_path, stop = start_app(tmp_path, collector.endpoint(protocol), protocol,
                                       OTEL_BSP_MAX_QUEUE_SIZE="100", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="50")
    try:
        wait_until(lambda: len(collector.spans()) >= RATE // 2, 30, "spans before the outage")
        collector.stop()
        # The outage lasts until the app has counted failed exports of spans and log records
        # (after the exporter's own retries, bounded by the 2 s export timeout), and OUTAGE_SECONDS at least.
        outage = time.monotonic()
        wait_until(lambda: bool((s := read_status(status_path)) and dropped(s, "traces", "export_failed")
                                and dropped(s, "logs", "export_failed")) and time.monotonic() - outage > OUTAGE_SECONDS,
                   OUTAGE_SECONDS + 20, "failed exports counted")
        back = collector.start()

        def resumed() -> bool:
            return any(span.end_ns / 1e9 > back for span in collector.spans())

        wait_until(resumed, 20, "spans ended after the collector's return")
        recovery = time.time() - back
        # Load goes on until spans ended a second past the recovery limit arrived too.
        wait_until(lambda: any(s.end_ns / 1e9 > back + RECOVERY_LIMIT_SECONDS + 1 for s in collector.spans()),
                   20, "spans a second past the recovery limit")
        status = finish(app, stop, status_path)
        wait_until(lambda: len(collector.spans()) >= status["ledger"]["traces"]["exported"], 10,
                   "the collector to write the last batch")
    finally:
        stop.touch()
        app.stop()
        collector.stop()
    ledger, made = status["ledger"], status["made"]
    print(f"\n{protocol}: recovery {recovery:.2f}s; made {made}; ledger {json.dumps(ledger)}")
    check_balanced(ledger)
    spans, logs, points = collector.spans(), collector.logs(), collector.metric_points()
    # Spans: exactly the app's, every one exported once or counted.
    assert ledger["traces"]["produced"] == made["spans"]
    assert len(spans) == ledger["traces"]["exported"] == len({s.span_id for s in spans})
    assert ledger["traces"]["dropped"].get("export_failed", 0) > 0
    # Nothing made after the recovery limit is lost: the exporter is back and the queue drained
    # (until then a full queue still drops the newest spans: counted, queue_full).
    indices = {int(s.name.split()[1]) for s in spans}
    first_after = min(int(s.name.split()[1]) for s in spans if s.end_ns / 1e9 > back + RECOVERY_LIMIT_SECONDS)
    assert set(range(first_after, made["spans"])) <= indices
    # Log records: the app's, and the exporters' own warnings (rate-limited) through the same pipeline.
    app_logs = [r for r in logs if str(r.body).startswith("record ")]
    assert len(logs) == ledger["logs"]["exported"] and len(app_logs) == len({r.body for r in app_logs})
    assert 0 <= ledger["logs"]["produced"] - made["logs"] <= 10
    print("other log records:", [str(r.body)[:80] for r in logs if r not in app_logs])
    assert ledger["logs"]["dropped"].get("export_failed", 0) > 0
    # Metric data points: what the collector wrote is what the ledger says was exported.
    assert len(points) == ledger["metrics"]["exported"] > 0
    assert ledger["metrics"]["dropped"].get("export_failed", 0) > 0
    # crm.telemetry.dropped (cumulative: the last point of each series is its total, sent by the
    # exit flush's metric export) says the same as the ledger.
    last = {(p.attributes["crm.signal"], p.attributes["crm.drop.reason"]): int(p.value or 0)
            for p in points if p.metric == "crm.telemetry.dropped"}
    assert last == {(signal, reason): n for signal, tally in ledger.items() for reason, n in tally["dropped"].items()}
    assert recovery <= RECOVERY_LIMIT_SECONDS, f"{protocol} exports resumed {recovery:.2f}s after the return"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_exit_with_a_dead_collector_counts_what_is_queued_and_exits_in_time(tmp_path: Path, protocol: str) -> None:
    collector = RestartableCollector(tmp_path)
    collector.start()
    app, status_path, stop = start_app(tmp_path, collector.endpoint(protocol), protocol,
                                       OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_BLRP_SCHEDULE_DELAY="60000",
                                       OTEL_METRIC_EXPORT_INTERVAL="60000")
    try:
        wait_until(lambda: read_status(status_path).get("made", {}).get("spans", 0) >= 20, 30, "load")
        collector.stop()  # nothing exported yet (60 s delays): everything is still queued
        status = finish(app, stop, status_path, timeout=10)
        output = app.output()
    finally:
        stop.touch()
        app.stop()
        collector.stop()
    ledger = status["ledger"]
    check_balanced(ledger)
    assert ledger["traces"]["produced"] == status["made"]["spans"]
    assert ledger["traces"]["dropped"] == {"shutdown": status["made"]["spans"]}
    assert ledger["logs"]["dropped"].get("shutdown", 0) >= status["made"]["logs"]
    assert ledger["metrics"]["dropped"].get("shutdown", 0) > 0
    end = float(next(line for line in output.splitlines() if line.startswith("END ")).split()[1])
    exited = float(next(line for line in output.splitlines() if line.startswith("EXITED ")).split()[1])
    assert exited - end < 1.0, "a refused endpoint: no flush attempt, exit at once"


def test_exit_with_a_silent_collector_settles_within_the_shutdown_timeout(tmp_path: Path) -> None:
    """A collector that accepts connections and never answers: the exit flush runs into the
    shutdown deadline (2 s); what it could not send is counted as `shutdown`."""
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(100)  # accepted by the kernel, never read
        endpoint = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
        app, status_path, stop = start_app(tmp_path, endpoint, "http/protobuf",
                                           OTEL_CRM_SHUTDOWN_TIMEOUT_SECONDS="2", OTEL_EXPORTER_OTLP_TIMEOUT="10000",
                                           OTEL_METRIC_EXPORT_INTERVAL="60000", OTEL_CRM_LOG_FORMAT="text",
                                           OTEL_CRM_LOG_LEVEL="warning")
        try:
            wait_until(lambda: read_status(status_path).get("made", {}).get("spans", 0) >= 20, 30, "load")
            status = finish(app, stop, status_path, timeout=10)
            output = app.output()
        finally:
            stop.touch()
            app.stop()
    ledger = status["ledger"]
    check_balanced(ledger)
    assert ledger["traces"]["produced"] == status["made"]["spans"]
    assert ledger["traces"]["exported"] == 0 and ledger["traces"]["dropped"].get("shutdown", 0) > 0
    end = float(next(line for line in output.splitlines() if line.startswith("END ")).split()[1])
    exited = float(next(line for line in output.splitlines() if line.startswith("EXITED ")).split()[1])
    assert 1.5 < exited - end < 2.5, "bounded by the 2 s shutdown timeout"
    lines = [line for line in output.splitlines() if "otel_crm:" in line]  # not the app's records
    assert len(lines) == 1 and "the exit flush did not finish within 2.0s; dropped " in lines[0], output
    counted = ledger["traces"]["dropped"]["shutdown"]
    assert f"dropped {counted} traces" in lines[0] and "reason shutdown" in lines[0]
