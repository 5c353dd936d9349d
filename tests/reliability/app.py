"""The app the reliability scenarios load: `otel_crm.configure()` and a threaded HTTP server.

Run as a script (`python tests/reliability/app.py`), never under pytest, so otel_crm behaves as in
production (internal errors swallowed, not re-raised). Environment: CRM_PORT, plus any otel_crm /
OTEL_* variable. Each `GET /work` ends exactly one span (SERVER, so RED metrics see it) and emits
exactly one log record, then answers 200: what the app produced is known exactly.

SIGTERM: the app stops taking work (503, no telemetry), waits for requests in flight and prints
one line `RELIABILITY {"produced": ...}`. Then, by default (RELIABILITY_SIGTERM=app), it exits as
servers with their own SIGTERM handler do (gunicorn, uvicorn): otel_crm flushes at interpreter
exit within OTEL_CRM_SHUTDOWN_TIMEOUT_SECONDS, and a last line `RELIABILITY-LEDGER {...}` gives
otel_crm's settled export ledger (`otel_crm.testing.telemetry_accounting()`). With
RELIABILITY_SIGTERM=otel_crm the app hands over to otel_crm's own SIGTERM handler instead (no
ledger line: that handler ends the process by the signal).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from opentelemetry import trace

import otel_crm

__all__ = ["main"]

log = logging.getLogger("reliability.app")
_lock = threading.Lock()
_state = {"traces": 0, "logs": 0, "in_flight": 0, "draining": 0, "recording": 0}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            self._answer(200, b"ok")
            return
        if self.path == "/stats":
            with _lock:
                body = json.dumps(_state).encode()
            self._answer(200, body)
            return
        with _lock:
            if _state["draining"]:
                refused = True
            else:
                refused = False
                _state["in_flight"] += 1
        if refused:
            self._answer(503, b"draining")
            return
        try:
            with trace.get_tracer("reliability.app").start_as_current_span(
                    "GET /work", kind=trace.SpanKind.SERVER,
                    attributes={"http.request.method": "GET", "http.route": "/work",
                                "http.response.status_code": 200}) as span:
                log.info("work done")
                recording = span.is_recording()
            with _lock:
                _state["recording"] = int(recording)
                _state["traces"] += 1
                _state["logs"] += 1
            self._answer(200, b"done")
        finally:
            with _lock:
                _state["in_flight"] -= 1

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # no stderr line per request


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # The stdlib's backlog of 5 overflows under a burst: a dropped SYN costs the client a 1 s
    # retransmit, a latency that would be the server's, not otel_crm's.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that went away (the load generator at its end): not a finding
        super().handle_error(request, client_address)


def _drain() -> None:
    """Stop taking work, wait (bounded) for requests in flight, say what was produced."""
    with _lock:
        _state["draining"] = 1
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        with _lock:
            if not _state["in_flight"]:
                break
        time.sleep(0.005)
    with _lock:
        produced = {"traces": _state["traces"], "logs": _state["logs"]}
    sys.stdout.write("RELIABILITY " + json.dumps({"produced": produced, "sigterm_at": time.time()}) + "\n")
    sys.stdout.flush()


def _print_ledger() -> None:
    """At the very end (registered before configure(), so it runs after otel_crm's exit flush):
    otel_crm's own export ledger, settled."""
    from otel_crm.testing import telemetry_accounting

    sys.stdout.write("RELIABILITY-LEDGER " + json.dumps(telemetry_accounting()) + "\n")
    sys.stdout.flush()


def _wrap_otel_handler(otel_handler: Any) -> None:
    """RELIABILITY_SIGTERM=otel_crm: otel_crm's own SIGTERM handler does the exit."""
    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        _drain()
        if callable(otel_handler):
            otel_handler(signum, frame)
        else:  # otel_crm installed none (disabled, or a bad setting turned it off): exit plainly
            os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)


def _server_handler(signum: int, frame: FrameType | None) -> None:
    """RELIABILITY_SIGTERM=app (default): the server's own handler, as gunicorn or uvicorn have;
    otel_crm then flushes at interpreter exit (atexit)."""
    _drain()
    raise SystemExit(0)


def main() -> None:
    own_handler = os.environ.get("RELIABILITY_SIGTERM", "app") == "app"
    if own_handler:
        signal.signal(signal.SIGTERM, _server_handler)
        atexit.register(_print_ledger)
    otel_crm.configure()
    logging.getLogger().setLevel(logging.INFO)
    if not own_handler:
        _wrap_otel_handler(signal.getsignal(signal.SIGTERM))
    server = QuietServer(("127.0.0.1", int(os.environ["CRM_PORT"])), Handler)
    server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
