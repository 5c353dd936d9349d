from __future__ import annotations

import logging
import threading
import time

from otel_crm._internal.lifecycle import RateLimitFilter, run_with_deadline


def test_a_hanging_shutdown_is_abandoned_at_the_deadline() -> None:
    release = threading.Event()
    started = time.monotonic()
    finished = run_with_deadline(lambda: release.wait(30), 0.3, "test-shutdown")
    elapsed = time.monotonic() - started
    release.set()
    assert finished is False and elapsed < 1.0


def test_a_quick_shutdown_reports_success() -> None:
    assert run_with_deadline(lambda: None, 5, "quick") is True


def test_repeated_exporter_errors_are_logged_once_per_interval() -> None:
    limiter = RateLimitFilter(interval=60)
    record = logging.LogRecord("opentelemetry.exporter", logging.WARNING, __file__, 1,
                               "Transient error %s encountered while exporting", ("UNAVAILABLE",), None)
    results = [limiter.filter(record) for _ in range(100)]
    assert results.count(True) == 1 and limiter.suppressed == 99
