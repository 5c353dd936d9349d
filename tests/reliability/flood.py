"""A span flood in one process: N spans as fast as one thread can end them, exported to the real
collector. The queue must hold its budget (RSS growth bounded), every span is exported or counted
as dropped: produced = exported + counted.

Run as a script (`python tests/reliability/flood.py N PROMETHEUS_PORT`, not under pytest) with the
OTLP endpoint in the environment; prints one `RELIABILITY {json}` line. `run()` starts it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["main", "rss_mb", "run"]

SPAN_NAME = "flood"
THREADS = 4  # producers racing for the queue's last free slots, as request threads do


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _dropped(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("crm_telemetry_dropped") and 'crm_signal="traces"' in line and "_created" not in line:
            reason = line.split('crm_drop_reason="', 1)[1].split('"', 1)[0]
            out[reason] = out.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def main() -> None:
    from opentelemetry import trace

    import otel_crm

    total, port = int(sys.argv[1]), int(sys.argv[2])
    otel_crm.configure(prometheus_port=port, sampling_mode="off", log_format="none")
    tracer = trace.get_tracer("reliability.flood")
    provider: Any = trace.get_tracer_provider()
    for _ in range(2000):  # warm up: the first batches, imports, caches
        with tracer.start_as_current_span("warmup"):
            pass
    provider.force_flush(10_000)
    baseline = rss_mb()
    peaks = [baseline]

    def produce(count: int) -> None:
        for index in range(count):
            tracer.start_span(SPAN_NAME).end()
            if index % 20_000 == 0:
                peaks.append(rss_mb())

    started = time.monotonic()
    producers = [threading.Thread(target=produce, args=(total // THREADS + (i < total % THREADS),))
                 for i in range(THREADS)]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join()
    elapsed = time.monotonic() - started
    peak = max(*peaks, rss_mb())
    flushed = bool(provider.force_flush(30_000))  # what is still queued goes out (or is counted)
    result = {"produced": total, "threads": THREADS, "seconds": elapsed, "rss_baseline_mb": baseline,
              "rss_peak_mb": peak, "flushed": flushed, "dropped": _dropped(port)}
    print("RELIABILITY " + json.dumps(result), flush=True)


def exported_spans(traces_file: Path) -> int:
    """Spans named `flood` in the collector's file (a substring count: a million spans parse slowly)."""
    if not traces_file.exists():
        return 0
    needle = f'"name":"{SPAN_NAME}"'.encode()
    count = 0
    with open(traces_file, "rb") as data:
        for line in data:
            count += line.count(needle)
    return count


def run(endpoint: str, total: int, work: Path, timeout: float) -> dict[str, Any]:
    from tests.reliability.misuse import clean_env
    from tests.support.processes import ROOT, free_port

    env = {**clean_env(), "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "reliability-flood",
           "OTEL_BSP_SCHEDULE_DELAY": "200"}
    done = subprocess.run([sys.executable, str(Path(__file__)), str(total), str(free_port())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    (work / "flood.log").write_text(done.stdout + done.stderr)
    for line in done.stdout.splitlines():
        if line.startswith("RELIABILITY "):
            result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
            result["returncode"] = done.returncode
            result["tracebacks"] = (done.stdout + done.stderr).count("Traceback")
            return result
    raise RuntimeError(f"flood driver failed ({done.returncode}): {done.stderr[-2000:]}")


if __name__ == "__main__":
    main()
