"""Start and stop: ``configure()`` = resolve settings → compose → install; ``shutdown()``.

Installing is every process-global effect, here and nowhere else: the current runtime, the global
providers, the propagator, the OTEL_SEMCONV_STABILITY_OPT_IN export, root log handlers, quiet
exporter loggers, flush at exit and on SIGTERM, fork hooks. Shutdown runs in a daemon thread that
the caller waits for at most `timeout` seconds, so a collector that is down (the gRPC exporter
retries with backoff) can never hang process exit.
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
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_crm._internal import accounting, exit_drop, forks, semconv
from otel_crm._internal.compose import compose
from otel_crm._internal.logs import LOCAL_ONLY, install_log_handlers
from otel_crm._internal.propagation import install_propagator
from otel_crm._internal.runtime import (
    Runtime,
    global_tracer_provider_unset,
    installed_runtime,
    set_current_runtime,
)
from otel_crm._internal.safety import report_internal_error
from otel_crm._internal.sampling import sampler_notice
from otel_crm._internal.scrub_patterns import ScrubCallback
from otel_crm._internal.sdk_compat import restart_metrics_after_fork, update_resource
from otel_crm._internal.sdk_fast_paths import install_fast_paths
from otel_crm._internal.settings import discard_invalid_standard_variables, resolve_settings
from otel_crm._internal.startup_report import startup_summary

__all__ = ["RateLimitFilter", "configure", "deadline_summary", "install", "install_exit_hooks", "is_configured",
           "quiet_exporter_logs", "run_with_deadline", "shutdown"]

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


def run_with_deadline(function: Callable[[], Any], timeout: float, name: str, *, warn: bool = True) -> bool:
    """Run `function` in a daemon thread; wait at most `timeout` s. True if it finished.
    `warn=False`: the caller says what a missed deadline cost."""
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
    if not finished and warn:
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


def _exit_shutdown(shutdown: Callable[[], Any]) -> Callable[[], None]:
    """The exit flush: endpoints that refuse connections get no flush attempt (their exporters
    drop and count instead, `exit_drop`), the others the ordinary one."""
    def run() -> None:
        try:
            exit_drop.prepare()
        except Exception as exc:
            report_internal_error("shutdown", exc, raise_in_tests=False)
        shutdown()

    return run


def deadline_summary(timeout: float, counted: Mapping[str, int]) -> str:
    """The one exit line when the flush ran out of time: what it could not send, counted."""
    counts = ", ".join(f"{counted.get(signal, 0)} {signal}" for signal in ("traces", "logs", "metrics"))
    return (f"otel_crm: the exit flush did not finish within {timeout:.1f}s; dropped {counts} still queued "
            f"or in flight (counted in crm.telemetry.dropped, reason shutdown)")


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
        finished = run_with_deadline(_exit_shutdown(shutdown), timeout, "shutdown", warn=False)
        counted = accounting.settle()  # past the deadline, what is still queued or in flight is lost
        line = exit_drop.summary()
        if line is None and not finished:
            line = deadline_summary(timeout, counted)
        if line is not None:  # stdout only: the logs pipeline is shut down by now
            _log.warning(line, extra={LOCAL_ONLY: True})

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


# --- configure / install / shutdown -------------------------------------------------------------

_configure_lock = threading.Lock()


def configure(*, environ: Mapping[str, str] | None = None, scrub_callback: ScrubCallback | None = None,
              **settings: Any) -> Runtime:
    """Set up traces, metrics and logs for this process. Idempotent: later calls return the
    runtime of the first one (inside ``otel_crm.testing.capture_telemetry``, the test's).
    Keyword arguments are setting names (docs/configuration.md) and beat environment variables;
    `scrub_callback` decides keep or redact for each finding of the scrubber (docs/privacy.md)."""
    with _configure_lock:
        existing = installed_runtime()
        if existing is not None and existing.origin != "environment":
            if settings:
                _log.warning("otel_crm: configure() already ran in this process; arguments ignored")
            return existing
        resolved = resolve_settings(environ, **settings)
        if environ is None:  # before anything upstream reads a standard variable otel_crm refused
            discard_invalid_standard_variables(resolved)
        runtime = compose(resolved, scrub_callback=scrub_callback)
        notice = None if resolved.disabled else sampler_notice(resolved)
        if notice is not None:
            _log.warning(notice)
        install(runtime)
        if runtime.settings.startup_report and not runtime.settings.disabled:
            _log.info(startup_summary(runtime.settings))
        return runtime


def install(runtime: Runtime) -> None:
    """Make a composed runtime this process's: every global effect of configure()."""
    set_current_runtime(runtime)
    accounting.reset()  # the ledger counts the pipelines installed from now on
    settings = runtime.settings
    if settings.disabled or runtime.tracer_provider is None or runtime.meter_provider is None \
            or runtime.logger_provider is None:
        return
    # Instrumentations read their convention mode from the environment when they start: export
    # the setting (default http,database) so configure() without the wrapper gets it too.
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = settings.semconv_stability_opt_in
    _set_globals(runtime.tracer_provider, runtime.meter_provider, runtime.logger_provider)
    install_fast_paths()  # attribute cleaning and metric hashing for the common types (sdk_fast_paths.py)
    install_propagator(settings)
    quiet_exporter_logs()
    install_log_handlers(settings, runtime.logger_provider, scrubber=runtime.scrubber)
    install_exit_hooks(runtime.shutdown, settings.shutdown_timeout_seconds)
    _register_fork_hooks(runtime.tracer_provider, runtime.meter_provider, runtime.logger_provider, runtime)


def _set_globals(tracer_provider: TracerProvider, meter_provider: MeterProvider,
                 logger_provider: LoggerProvider) -> None:
    if not global_tracer_provider_unset():
        _log.warning("otel_crm: a tracer provider (%s) was already installed; otel_crm's helpers use "
                     "their own, but instrumentations keep the first one", type(trace.get_tracer_provider()).__name__)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    set_logger_provider(logger_provider)


def _register_fork_hooks(tracer_provider: TracerProvider, meter_provider: MeterProvider,
                         logger_provider: LoggerProvider, runtime: Runtime) -> None:
    """After a fork (gunicorn/uWSGI workers, --preload included) each worker is its own process.

    The SDK's providers already merge a fresh service.instance.id into their resource after a
    fork (so workers do not push cumulative series under one identity); we free the metrics
    pipeline of locks held by parent threads, give the worker a fresh tenant budget and add its
    own process.pid, which the SDK leaves at the parent's. An explicit service.instance.id is
    the user's choice: it is put back in every worker (docs/lifecycle.md). Independent hooks: one failing costs
    none of the others. Registered after the providers were built, so they run after the SDK's
    own (which renew the locks `update_resource` takes)."""
    forks.register("runtime: metric stores", after_in_child=lambda: restart_metrics_after_fork(meter_provider))
    if runtime.cardinality is not None:
        forks.register("runtime: metric budgets", after_in_child=runtime.cardinality.after_fork)
    settings = runtime.settings
    instance = settings.service_instance_id or settings.resource_attributes.get(semconv.SERVICE_INSTANCE_ID, "")
    for kind, provider in (("traces", tracer_provider), ("metrics", meter_provider), ("logs", logger_provider)):
        forks.register(f"runtime: process.pid ({kind})", after_in_child=_pid_updater(provider, instance))


def _pid_updater(provider: TracerProvider | MeterProvider | LoggerProvider, instance: str) -> Callable[[], None]:
    """The worker's own process.pid; an explicit service.instance.id (setting or
    OTEL_RESOURCE_ATTRIBUTES) is put back over the random one the SDK gave the worker."""
    def update() -> None:
        attributes: dict[str, str | int] = {semconv.PROCESS_PID: os.getpid()}
        if instance:
            attributes[semconv.SERVICE_INSTANCE_ID] = instance
        update_resource(provider, Resource(attributes))

    return update


def is_configured() -> bool:
    runtime = installed_runtime()
    return runtime is not None and runtime.origin == "configure"


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop every signal, waiting at most `timeout` seconds (default: the
    shutdown_timeout_seconds setting). Returns False when the deadline passed."""
    runtime = installed_runtime()
    if runtime is None or runtime.origin != "configure":
        return True
    limit = runtime.settings.shutdown_timeout_seconds if timeout is None else timeout
    finished = run_with_deadline(runtime.shutdown, limit, "shutdown")
    accounting.settle()
    return finished
