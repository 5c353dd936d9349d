"""A steady producer for the accounting tests: one span and one log record per tick under
otel_crm.configure(), until a stop file appears. Every 100 ms it writes its status (what it made,
the ledger) to STATUS_PATH; at exit, after otel_crm's exit flush, the final figures.

argv: status path, stop-file path, rate per second."""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

STATUS, STOP, RATE = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
made = {"spans": 0, "logs": 0}


def write(final: bool) -> None:
    from otel_crm.testing import telemetry_accounting

    status: dict[str, Any] = {"made": dict(made), "ledger": telemetry_accounting(), "final": final,
                              "time": time.time()}
    tmp = STATUS.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, STATUS)


# Registered before configure(): atexit runs hooks last-in first-out, so this one runs after
# otel_crm's exit flush and sees the settled ledger.
atexit.register(lambda: (write(True), sys.stderr.write(f"EXITED {time.time()}\n")))

from opentelemetry import trace  # noqa: E402

import otel_crm  # noqa: E402 - after the atexit hook on purpose

otel_crm.configure(service_name="accounting-app", sampling_mode="off")
tracer = trace.get_tracer("accounting")
log = logging.getLogger("accounting")

period = 1.0 / RATE
next_tick = time.monotonic()
last_status = 0.0
while not STOP.exists():
    with tracer.start_as_current_span(f"work {made['spans']}"):
        log.warning("record %d", made["logs"])
        made["logs"] += 1
    made["spans"] += 1
    now = time.monotonic()
    if now - last_status > 0.1:
        write(False)
        last_status = now
    next_tick += period
    time.sleep(max(0.0, next_tick - time.monotonic()))
sys.stderr.write(f"END {time.time()}\n")
