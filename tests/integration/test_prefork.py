"""gunicorn prefork (with --preload): every worker's telemetry arrives once, under its own identity."""

from __future__ import annotations

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
