"""Real processes on loopback for integration and e2e tests: free ports, start, wait, stop."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["ROOT", "ManagedProcess", "free_port", "http_ok", "wait_until"]

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


# Ports handed out below the kernel's ephemeral range (32768-60999 on Linux): a port taken from that
# range and released until a server binds it can meanwhile become the source port of any outgoing
# connection on the machine ("address already in use": seen when a benchmark ran beside the tests).
_PORT_RANGE = (20000, 32767)
_handed_out: set[int] = set()
_port_rng = random.Random()


def free_port() -> int:
    """A port free on 127.0.0.1 now, outside the ephemeral range, never the same twice per process."""
    for _ in range(200):
        port = _port_rng.randint(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # crowded: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `predicate` until true; fail with `what` after `timeout` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class ManagedProcess:
    """A subprocess whose output goes to a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 log_dir: Path, cwd: Path | None = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(list(argv), env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=str(cwd or ROOT), start_new_session=True)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, predicate: Callable[[], bool], timeout: float = 30) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            return predicate()

        wait_until(ready, timeout, f"{self.name} to become healthy")

    def stop(self, timeout: float = 10) -> float:
        """SIGTERM and wait; returns the seconds it took to exit."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return time.monotonic() - started
