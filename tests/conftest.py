"""Shared fixtures: the built collector on free loopback ports, and example apps run under the
real `opentelemetry-instrument`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.otlp_files import read_logs, read_metrics, read_spans
from tests.support.processes import ROOT, ManagedProcess, free_port, http_ok, tcp_open, wait_until

VENV_BIN = Path(sys.executable).parent


def otelcol_binary() -> Path:
    path = Path(os.environ.get("OTELCOL_BIN", ROOT / "build" / "otelcol-crm"))
    if not path.exists():
        pytest.fail(f"collector binary {path} is missing: run `make collector` (make test does it)")
    return path


@dataclass
class Collector:
    grpc_port: int
    http_port: int
    output: Path
    process: ManagedProcess

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def spans(self):  # type: ignore[no-untyped-def]
        return read_spans(self.output / "traces.jsonl")

    def metrics(self):  # type: ignore[no-untyped-def]
        return read_metrics(self.output / "metrics.jsonl")

    def logs(self):  # type: ignore[no-untyped-def]
        return read_logs(self.output / "logs.jsonl")


def start_file_collector(tmp_path: Path) -> Collector:
    out = tmp_path / "collector-out"
    out.mkdir(parents=True, exist_ok=True)
    grpc_port, http_port, health_port = free_port(), free_port(), free_port()
    env = {"TEST_OTLP_GRPC_PORT": str(grpc_port), "TEST_OTLP_HTTP_PORT": str(http_port),
           "TEST_HEALTH_PORT": str(health_port), "TEST_OUTPUT_DIR": str(out)}
    process = ManagedProcess("otelcol", [str(otelcol_binary()), "--config",
                                         str(ROOT / "tests" / "integration" / "collector-file.yaml")],
                             env=env, log_dir=tmp_path)
    process.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{health_port}/") and tcp_open(grpc_port))
    return Collector(grpc_port, http_port, out, process)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    """A real otelcol-crm writing what it receives to files."""
    col = start_file_collector(tmp_path)
    yield col
    col.process.stop()


@dataclass
class App:
    port: int
    process: ManagedProcess
    env: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def instrumented_env(collector: Collector | None, service: str, **extra: str) -> dict[str, str]:
    """Environment for an app under opentelemetry-instrument, exporting fast to `collector`."""
    env = {
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint if collector else "http://127.0.0.1:9",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_CRM_SHUTDOWN_TIMEOUT_SECONDS": "3",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def start_app(tmp_path: Path, argv: list[str], env: dict[str, str], name: str = "app", *,
              health_path: str = "/health", port: int | None = None) -> App:
    port = port or free_port()
    full_env = {**env, "CRM_PORT": str(port)}
    process = ManagedProcess(name, [str(VENV_BIN / "opentelemetry-instrument"), *argv], env=full_env,
                             log_dir=tmp_path)
    process.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{port}{health_path}"), timeout=60)
    return App(port, process, full_env)


def flask_app(tmp_path: Path, env: dict[str, str], name: str = "flask_crm") -> App:
    return start_app(tmp_path, [sys.executable, str(ROOT / "examples" / "flask_crm" / "app.py")], env, name)


MANAGE = ROOT / "examples" / "django_crm" / "manage.py"


def django_app(tmp_path: Path, env: dict[str, str], name: str = "django_crm", *,
               settings_in_env: bool = True) -> App:
    """`opentelemetry-instrument python examples/django_crm/manage.py runserver --noreload` on
    CRM_PORT, with its own SQLite file. `settings_in_env=False` runs exactly the documented command
    (manage.py then restarts itself once with DJANGO_SETTINGS_MODULE set)."""
    full = {"CRM_DB_PATH": str(tmp_path / f"{name}.sqlite3"), **env}
    if settings_in_env:
        full.setdefault("DJANGO_SETTINGS_MODULE", "crm_settings")
        full.setdefault("PYTHONPATH", str(MANAGE.parent))
    return start_app(tmp_path, [sys.executable, str(MANAGE), "runserver", "--noreload"], full, name)


__all__ = ["App", "Collector", "django_app", "flask_app", "instrumented_env", "start_app", "wait_until"]
