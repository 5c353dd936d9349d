"""Flush at exit and on SIGTERM with a deadline; quiet exporter logs during a collector outage.

Shutdown runs in a daemon thread that the caller waits for at most `timeout` seconds, so a
collector that is down (the gRPC exporter retries with backoff) can never hang process exit.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["RateLimitFilter", "install_exit_hooks", "quiet_exporter_logs", "run_with_deadline"]

_log = logging.getLogger("otel_crm")

# Loggers that repeat themselves every batch while the collector is unreachable.
NOISY_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
)


def run_with_deadline(function: Callable[[], Any], timeout: float, name: str) -> bool:
    """Run `function` in a daemon thread; wait at most `timeout` s. True if it finished."""
    done = threading.Event()

    def target() -> None:
        try:
            function()
        except Exception as exc:
            _log.warning("otel_crm: %s failed: %r", name, exc)
        finally:
            done.set()

    thread = threading.Thread(target=target, name=f"otel_crm-{name}", daemon=True)
    thread.start()
    finished = done.wait(timeout)
    if not finished:
        _log.warning("otel_crm: %s did not finish within %.1fs; telemetry still queued is dropped",
                     name, timeout)
    return finished


class RateLimitFilter(logging.Filter):
    """Lets one record per (logger, message template) through per `interval` seconds."""

    def __init__(self, interval: float = 300.0):
        super().__init__()
        self._interval = interval
        self._last: dict[tuple[str, object], float] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self.suppressed += 1
            return False
        self._last[key] = now
        if len(self._last) > 1000:  # bounded, like everything else
            self._last.clear()
        return True


_quiet_filter = RateLimitFilter()


def quiet_exporter_logs() -> None:
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if _quiet_filter not in logger.filters:
            logger.addFilter(_quiet_filter)


_installed = False


def install_exit_hooks(shutdown: Callable[[], Any], timeout: float) -> None:
    """Flush and shut down at interpreter exit and on SIGTERM, each bounded by `timeout`.

    SIGTERM is handled only where nobody else handles it (SIG_DFL) and only from the main
    thread: servers such as gunicorn install their own handler and exit through atexit.
    """
    global _installed
    if _installed:
        return
    _installed = True
    state = {"done": False}
    lock = threading.Lock()

    def once() -> None:
        with lock:
            if state["done"]:
                return
            state["done"] = True
        run_with_deadline(shutdown, timeout, "shutdown")

    atexit.register(once)
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            once()
            # Dying by the default signal action skips atexit and stdio buffers: flush log
            # handlers (our stdout handler flushes lazily) and the streams ourselves.
            for flushable in (*logging.getLogger().handlers, sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):  # best effort on the way out
                    flushable.flush()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)
    except (ValueError, OSError):  # not the main interpreter / unsupported platform
        return


def reset_for_tests() -> None:
    global _installed
    _installed = False
