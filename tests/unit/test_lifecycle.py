"""Start and stop: configure() (resolve, compose, install), shutdown with a deadline, exit hooks.

configure() owns process-global state, so each of its cases runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

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



def _run(code: str, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    base.update({"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
                 "OTEL_LOGS_EXPORTER": "none", "OTEL_CRM_LOG_FORMAT": "none", **env})
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=base, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_explicit_arguments_beat_environment_and_configure_is_idempotent() -> None:
    out = _run("""
        import json, otel_crm
        first = otel_crm.configure(service_name="explicit", sampling_mode="off")
        second = otel_crm.configure(service_name="ignored")
        from opentelemetry import trace
        provider = trace.get_tracer_provider()
        print(json.dumps({"same": first is second, "name": first.settings.service_name,
                          "resource": provider.resource.attributes["service.name"],
                          "ratio": first.settings.sampling_ratio}))
    """, OTEL_SERVICE_NAME="from-env", OTEL_CRM_SAMPLING_RATIO="0.5")
    assert out == {"same": True, "name": "explicit", "resource": "explicit", "ratio": 0.5}


def test_disabled_installs_nothing() -> None:
    out = _run("""
        import json, otel_crm
        from opentelemetry import trace
        runtime = otel_crm.configure()
        print(json.dumps({"provider": type(trace.get_tracer_provider()).__name__,
                          "disabled": runtime.settings.disabled}))
    """, OTEL_SDK_DISABLED="true")
    assert out == {"provider": "ProxyTracerProvider", "disabled": True}


def test_shutdown_returns_within_its_deadline_when_the_collector_is_down() -> None:
    out = _run("""
        import json, time, otel_crm
        from opentelemetry import trace
        otel_crm.configure(sampling_mode="off", traces_exporter=["otlp"],
                           otlp_endpoint="http://127.0.0.1:9", otlp_timeout_ms=30000)
        tracer = trace.get_tracer("t")
        for i in range(50):
            tracer.start_span(f"s{i}").end()
        started = time.monotonic()
        otel_crm.shutdown(timeout=1.0)
        print(json.dumps({"seconds": time.monotonic() - started}))
    """)
    assert out["seconds"] < 1.5


def test_prometheus_endpoint_serves_our_metrics_when_enabled() -> None:
    from tests.support.processes import free_port

    port = free_port()
    out = _run(f"""
        import json, urllib.request, otel_crm
        from opentelemetry import trace
        otel_crm.configure(sampling_mode="off", prometheus_port={port})
        with trace.get_tracer("t").start_as_current_span("nightly_job"):
            pass
        body = urllib.request.urlopen("http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        print(json.dumps({{"requests": [l for l in body.splitlines() if l.startswith("crm_requests")]}}))
    """)
    assert any('crm_operation_name="nightly_job"' in line and line.endswith(" 1.0") for line in out["requests"])


def test_prometheus_port_in_use_does_not_stop_the_app() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = _run(f"""
            import json, otel_crm
            otel_crm.configure(sampling_mode="off", prometheus_port={port})
            print(json.dumps({{"ok": True}}))
        """)
    assert out == {"ok": True}


def test_configure_without_the_wrapper_sets_the_semconv_opt_in() -> None:
    out = _run("""
        import json, os, otel_crm
        otel_crm.configure(sampling_mode="off")
        print(json.dumps({"opt_in": os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN")}))
    """)
    assert out == {"opt_in": "http,database"}


def test_one_current_runtime_and_configure_installs_it_once() -> None:
    out = _run("""
        import json, otel_crm
        from otel_crm._internal import lifecycle, runtime
        before = lifecycle.is_configured()
        lazily = runtime.current_runtime()  # built from the environment alone: not a configuration
        first = otel_crm.configure(sampling_mode="off")
        print(json.dumps({"before": before, "lazy": lazily.origin, "after": lifecycle.is_configured(),
                          "current": runtime.current_runtime() is first, "origin": first.origin,
                          "again": otel_crm.configure() is first}))
    """)
    assert out == {"before": False, "lazy": "environment", "after": True, "current": True,
                   "origin": "configure", "again": True}


def test_configure_inside_capture_telemetry_returns_the_tests_runtime() -> None:
    out = _run("""
        import json, otel_crm
        from opentelemetry import trace
        from otel_crm.testing import capture_telemetry
        with capture_telemetry() as telemetry:
            same = otel_crm.configure() is telemetry.runtime
        print(json.dumps({"same": same, "global": type(trace.get_tracer_provider()).__name__}))
    """)
    # nothing real was installed: the global provider is the test delegate's, not a second pipeline
    assert out == {"same": True, "global": "FastTracerProvider"}


def test_a_forked_worker_reports_its_own_pid_and_the_hooks_are_named() -> None:
    out = _run("""
        import json, os, otel_crm
        from otel_crm._internal import forks
        runtime = otel_crm.configure(sampling_mode="off")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            pids = [p.resource.attributes["process.pid"] for p in
                    (runtime.tracer_provider, runtime.logger_provider)]
            pids.append(runtime.meter_provider._sdk_config.resource.attributes["process.pid"])
            os.write(write, json.dumps({"pids": pids, "me": os.getpid()}).encode())
            os._exit(0)
        os.close(write)
        child = json.loads(os.fdopen(read).read())
        os.waitpid(pid, 0)
        print(json.dumps({"child": child["pids"] == [child["me"]] * 3, "parent_pid_kept":
                          runtime.tracer_provider.resource.attributes["process.pid"] == os.getpid(),
                          "hooks": [n for n in forks.registered() if n.startswith("runtime:")]}))
    """)
    assert out == {"child": True, "parent_pid_kept": True, "hooks": [
        "runtime: metric stores", "runtime: metric budgets", "runtime: process.pid (traces)",
        "runtime: process.pid (metrics)", "runtime: process.pid (logs)"]}


def test_the_deadline_line_says_what_was_dropped_per_signal() -> None:
    from otel_crm._internal.lifecycle import deadline_summary

    line = deadline_summary(3.0, {"traces": 12, "logs": 3})
    assert line == ("otel_crm: the exit flush did not finish within 3.0s; dropped 12 traces, 3 logs, 0 metrics "
                    "still queued or in flight (counted in crm.telemetry.dropped, reason shutdown)")


_FORK_INSTANCE = """
    import json, os, otel_crm
    runtime = otel_crm.configure(sampling_mode="off", {argument})
    parent = runtime.tracer_provider.resource.attributes["service.instance.id"]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        ids = [p.resource.attributes["service.instance.id"] for p in (runtime.tracer_provider,
                                                                     runtime.logger_provider)]
        ids.append(runtime.meter_provider._sdk_config.resource.attributes["service.instance.id"])
        os.write(write, json.dumps(ids).encode())
        os._exit(0)
    os.close(write)
    child = json.loads(os.fdopen(read).read())
    os.waitpid(pid, 0)
    print(json.dumps({{"parent": parent, "child": child}}))
"""


@pytest.mark.parametrize(("argument", "environ"), [
    ("service_instance_id='web-1'", {}),
    ("", {"OTEL_CRM_SERVICE_INSTANCE_ID": "web-1"}),
    ("", {"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=web-1"}),
])
def test_an_explicit_instance_id_is_kept_in_a_forked_worker(argument: str, environ: dict[str, str]) -> None:
    out = _run(_FORK_INSTANCE.format(argument=argument), **environ)
    assert out == {"parent": "web-1", "child": ["web-1"] * 3}


def test_without_an_explicit_instance_id_a_worker_gets_its_own() -> None:
    out = _run(_FORK_INSTANCE.format(argument=""))
    assert len(set(out["child"])) == 1 and out["child"][0] != out["parent"]
