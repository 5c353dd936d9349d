"""gunicorn prefork (with --preload): every worker's telemetry arrives once, under its own identity."""

from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import Collector, instrumented_env, start_app, wait_until
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration
REQUESTS = 40


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_gunicorn_workers_lose_and_duplicate_nothing(collector: Collector, tmp_path: Path, preload: bool) -> None:
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    port_placeholder = "{port}"
    env = instrumented_env(collector, "prefork-crm", OTEL_CRM_SAMPLING_MODE="off",
                           OTEL_BSP_SCHEDULE_DELAY="5000")  # long delay: only the exit flush can save spans
    argv = [gunicorn, "--workers", "2", "--chdir", str(ROOT / "examples" / "flask_crm"),
            "--graceful-timeout", "10", *(["--preload"] if preload else []), "app:create_app()"]
    app = _start_with_port(tmp_path, argv, env, port_placeholder)
    # Sync workers serve one request at a time: concurrent slow requests make both workers serve.
    with ThreadPoolExecutor(4) as pool:
        slow = list(pool.map(lambda _: requests.get(app.url("/slow?seconds=0.3"), timeout=10).status_code,
                             range(4)))
    assert slow == [200] * 4
    for _ in range(REQUESTS):
        with requests.Session() as fresh:
            assert fresh.get(app.url("/ok"), timeout=10).status_code == 200
    app.process.stop(timeout=20)

    def ok_spans() -> list:  # type: ignore[type-arg]
        return [s for s in collector.spans() if s.name == "GET /ok"]

    wait_until(lambda: len(ok_spans()) >= REQUESTS, 20, f"{REQUESTS} server spans")
    spans = ok_spans()
    assert len(spans) == REQUESTS and len({s.span_id for s in spans}) == REQUESTS
    served = [s for s in collector.spans() if s.name in ("GET /ok", "GET /slow")]
    instances = {s.resource["service.instance.id"] for s in served}
    assert len(instances) == 2, "each worker reports under its own service.instance.id"
    assert len({s.resource["process.pid"] for s in served}) == 2

    def per_instance_counts() -> dict[tuple[str, str], float]:
        counts: dict[tuple[str, str], float] = {}
        for point in collector.metrics():
            route = point.attributes.get("http.route")
            if point.metric == "crm.requests" and route in ("/ok", "/slow"):
                key = (point.resource["service.instance.id"], route)
                counts[key] = max(counts.get(key, 0), point.value or 0)  # cumulative: last is max
        return counts

    wait_until(lambda: sum(per_instance_counts().values()) == REQUESTS + 4, 20, "exact RED counts per worker")
    assert {instance for instance, _ in per_instance_counts()} == instances


def _start_with_port(tmp_path: Path, argv: list[str], env: dict[str, str], placeholder: str):  # type: ignore[no-untyped-def]
    # gunicorn takes its bind address on the command line; start_app picks the port for us.
    from tests.support.processes import free_port

    port = free_port()
    argv = [*argv[:1], "--bind", f"127.0.0.1:{port}", *argv[1:]]
    env = {**env, "CRM_PORT": str(port)}
    del placeholder
    return start_app(tmp_path, argv, env, name="gunicorn", port=port)


# A worker forked while other threads of the parent were busy with telemetry: (1) an export in
# flight, over a slow link (gRPC skips its fork handlers when a call is in progress, and the child's
# gRPC may then hang or crash); (2) the metric reader in the middle of a collection (its locks would
# stay held forever in the child). Both made the --preload test above lose a worker's metrics now
# and then; here both are forced, deterministically.
FORK_WHILE_BUSY = """
import os, socket, sys, threading, time
from opentelemetry import metrics, trace
import otel_crm

collector = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rsplit(":", 1)[1]
in_flight = threading.Event()

def relay(source, target, delay):  # a slow link: each reply arrives 0.5 s late
    while data := source.recv(65536):
        if delay:
            in_flight.set()
            time.sleep(delay)
        target.sendall(data)

def slow_link(listener):
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", int(collector)))
        threading.Thread(target=relay, args=(client, upstream, 0), daemon=True).start()
        threading.Thread(target=relay, args=(upstream, client, 0.5), daemon=True).start()

listener = socket.create_server(("127.0.0.1", 0))
threading.Thread(target=slow_link, args=(listener,), daemon=True).start()
runtime = otel_crm.configure(service_name="fork-crm", sampling_mode="off", bsp_schedule_delay_ms=60000,
                   metric_export_interval_ms=3600000,
                   otlp_endpoint=f"http://127.0.0.1:{listener.getsockname()[1]}")
parent = os.getpid()
collecting, release = threading.Event(), threading.Event()

def slow_gauge(options):  # e.g. a pool-size gauge that waits on a lock: only slow in the parent
    if os.getpid() == parent and not release.is_set():
        collecting.set()
        release.wait(30)
    return []

metrics.get_meter("t").create_observable_gauge("slow.gauge", callbacks=[slow_gauge])
with trace.get_tracer("t").start_as_current_span("parent-before-fork"):
    pass
threading.Thread(target=runtime.tracer_provider.force_flush, daemon=True).start()
threading.Thread(target=runtime.meter_provider.force_flush, daemon=True).start()
assert in_flight.wait(10) and collecting.wait(10), "an export in flight and a collection under way"
started = time.monotonic()
pid = os.fork()
if pid == 0:
    with trace.get_tracer("t").start_as_current_span("child-after-fork"):
        metrics.get_meter("t").create_counter("child.counter").add(3)
    ok = otel_crm.shutdown(timeout=10)
    print("child shutdown finished:", ok, flush=True)
    os._exit(0 if ok else 1)
print(f"fork waited {time.monotonic() - started:.1f}s", flush=True)
release.set()
_, status = os.waitpid(pid, 0)
print("child pid:", pid, flush=True)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_worker_forked_while_parent_threads_are_busy_still_delivers(collector: Collector,
                                                                     tmp_path: Path) -> None:
    import subprocess

    script = tmp_path / "fork_while_busy.py"
    script.write_text(FORK_WHILE_BUSY)
    env = instrumented_env(collector, "fork-crm")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipping fork() handlers" not in done.stderr, "no gRPC call of ours was in flight at fork"
    print(done.stdout)
    child_pid = re.search(r"child pid: (\d+)", done.stdout).group(1)  # type: ignore[union-attr]
    wait_until(lambda: any(s.name == "child-after-fork" for s in collector.spans()), 10, "the child's span")
    span = next(s for s in collector.spans() if s.name == "child-after-fork")
    assert str(span.resource["process.pid"]) == child_pid
    wait_until(lambda: any(p.metric == "child.counter" and p.value == 3 for p in collector.metrics()), 10,
               "the child's counter")


def test_an_explicit_instance_id_is_kept_by_every_preloaded_worker(collector: Collector, tmp_path: Path) -> None:
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    env = instrumented_env(collector, "prefork-named", OTEL_CRM_SAMPLING_MODE="off",
                           OTEL_CRM_SERVICE_INSTANCE_ID="web-1")
    argv = [gunicorn, "--workers", "2", "--chdir", str(ROOT / "examples" / "flask_crm"), "--graceful-timeout", "10",
            "--preload", "app:create_app()"]
    app = _start_with_port(tmp_path, argv, env, "{port}")
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: requests.get(app.url("/slow?seconds=0.3"), timeout=10).status_code,
                             range(4))) == [200] * 4
    app.process.stop(timeout=20)

    def served() -> list:  # type: ignore[type-arg]
        return [s for s in collector.spans() if s.name == "GET /slow"]

    wait_until(lambda: len(served()) == 4, 20, "the four server spans")
    assert len({s.resource["process.pid"] for s in served()}) == 2, "both workers served"
    assert {s.resource["service.instance.id"] for s in served()} == {"web-1"}
    wait_until(lambda: any(p.metric == "crm.requests" for p in collector.metrics()), 20, "RED metrics")
    assert {p.resource["service.instance.id"] for p in collector.metrics() if p.metric == "crm.requests"} == {"web-1"}
