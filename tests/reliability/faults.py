"""Collectors for the reliability scenarios: the real one (stopped and restarted on the same ports)
and three broken ones — a blackhole, an HTTP endpoint answering 503, a gRPC server answering
UNAVAILABLE. Everything binds 127.0.0.1 on ports from `free_port`; each is stopped by its owner."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.otlp_files import read_logs, read_metrics, read_spans
from tests.support.processes import ROOT, ManagedProcess, free_port, http_ok, tcp_open

__all__ = ["Blackhole", "FileCollector", "GrpcUnavailable", "Http503", "otelcol_binary"]

CONFIG = ROOT / "tests" / "integration" / "collector-file.yaml"


def otelcol_binary() -> Path:
    path = Path(os.environ.get("OTELCOL_BIN", ROOT / "build" / "otelcol-crm"))
    if not path.exists():
        raise FileNotFoundError(f"collector binary {path} is missing: run `make collector`")
    return path


@dataclass
class FileCollector:
    """The real otelcol-crm writing what it receives to files; `stop()` and `start()` again keep
    the ports (an outage, then the same collector back). Each run writes its own directory, so
    counting never depends on how the file exporter treats an existing file."""

    work: Path
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    runs: list[Path] = field(default_factory=list)
    process: ManagedProcess | None = None

    def endpoint(self, protocol: str) -> str:
        return f"http://127.0.0.1:{self.grpc_port if protocol == 'grpc' else self.http_port}"

    def start(self) -> None:
        out = self.work / f"collector-run{len(self.runs)}"
        out.mkdir(parents=True, exist_ok=True)
        self.runs.append(out)
        env = {"TEST_OTLP_GRPC_PORT": str(self.grpc_port), "TEST_OTLP_HTTP_PORT": str(self.http_port),
               "TEST_HEALTH_PORT": str(self.health_port), "TEST_OUTPUT_DIR": str(out)}
        self.process = ManagedProcess(f"otelcol-run{len(self.runs) - 1}",
                                      [str(otelcol_binary()), "--config", str(CONFIG)], env=env, log_dir=self.work)
        self.process.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{self.health_port}/")
                                  and tcp_open(self.grpc_port) and tcp_open(self.http_port))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def spans(self, name: str) -> int:
        return sum(1 for run in self.runs for s in read_spans(run / "traces.jsonl") if s.name == name)

    def logs(self, body: str | None = None) -> int:
        """Log records with `body` (None: every record)."""
        return sum(1 for run in self.runs for r in read_logs(run / "logs.jsonl") if body is None or r.body == body)

    def metric_points(self) -> int:
        """Metric data points received (what otel_crm's ledger counts for metrics)."""
        return sum(len(read_metrics(run / "metrics.jsonl")) for run in self.runs)


class Blackhole:
    """A TCP port that accepts connections and never answers (reads and discards)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.accepted = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(64)
        self._conns: list[socket.socket] = []
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def endpoint(self, protocol: str) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self._conns.append(conn)  # held open, never read: the sender's buffers fill and it waits

    def stop(self) -> None:
        self._stopped.set()
        for conn in self._conns:
            conn.close()
        self._sock.close()


class Http503:
    """An OTLP/HTTP endpoint answering every export with 503 (a retryable status)."""

    def __init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.requests += 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.requests = 0
        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def endpoint(self, protocol: str) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class GrpcUnavailable:
    """An OTLP/gRPC server (TraceService, LogsService, MetricsService) failing every Export with
    UNAVAILABLE, the status the exporters retry."""

    def __init__(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self.calls = 0
        owner = self

        def unavailable(request: Any, context: Any) -> Any:
            owner.calls += 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "reliability: collector unavailable")

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            Export = staticmethod(unavailable)

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc]
            Export = staticmethod(unavailable)

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
            Export = staticmethod(unavailable)

        self.port = free_port()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._server)
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        self._server.start()

    def endpoint(self, protocol: str) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.stop(grace=0).wait(5)
