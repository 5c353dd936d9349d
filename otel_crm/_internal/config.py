"""`configure()`: the one composition point. It resolves settings and wires the pure `create_*`
builders together; it holds no telemetry logic of its own."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk.resources import Resource

from otel_crm._internal import semconv, state
from otel_crm._internal.lifecycle import install_exit_hooks, quiet_exporter_logs, run_with_deadline
from otel_crm._internal.logs import create_logger_provider, install_log_handlers
from otel_crm._internal.metrics import create_meter_provider, restart_after_fork
from otel_crm._internal.resource import create_resource, distro_version
from otel_crm._internal.safety import internal_error
from otel_crm._internal.settings import Settings, resolve_settings
from otel_crm._internal.tenancy import TenantLabeler
from otel_crm._internal.traces import create_tracer_provider

__all__ = ["build_scrubber", "configure", "is_configured", "shutdown"]

_log = logging.getLogger("otel_crm")
_lock = threading.Lock()
_configured: state.Runtime | None = None


def build_scrubber(settings: Settings) -> Any:
    try:
        from otel_crm._internal.scrubbing import Scrubber
    except ImportError:  # pragma: no cover - the module ships with the package
        return None
    return Scrubber.from_settings(settings)


def _tenant_labeler(settings: Settings, meter: metrics.Meter | None) -> TenantLabeler:
    overflow = (meter.create_counter(
        semconv.CRM_TENANT_OVERFLOW, unit="{measurement}",
        description="Measurements whose tenant was recorded as __other__ (cardinality guard).")
        if meter is not None else None)

    def on_overflow(metric: str) -> None:
        if overflow is not None:
            overflow.add(1, {semconv.CRM_METRIC_NAME: metric})

    return TenantLabeler(settings.tenant_metric_limit, settings.tenant_allowlist, on_overflow)


def configure(*, environ: Mapping[str, str] | None = None, **settings: Any) -> state.Runtime:
    """Set up traces, metrics and logs for this process. Idempotent: later calls return the
    runtime of the first one. Keyword arguments are setting names (see the README's table) and
    beat environment variables."""
    global _configured
    with _lock:
        if _configured is not None:
            if settings:
                _log.warning("otel_crm: configure() already ran in this process; arguments ignored")
            return _configured
        resolved = resolve_settings(environ, **settings)
        runtime = _compose(resolved)
        state.install(runtime)
        _configured = runtime
        return runtime


def _compose(settings: Settings) -> state.Runtime:
    if settings.disabled:
        return state.Runtime(settings=settings)
    # Instrumentations read their convention mode from the environment when they start: export
    # the setting (default http,database) so configure() without the wrapper gets it too.
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = settings.semconv_stability_opt_in
    resource = create_resource(settings)
    meter_provider = create_meter_provider(settings, resource)
    meter = meter_provider.get_meter("otel_crm", distro_version())
    scrubber = build_scrubber(settings)
    labeler = _tenant_labeler(settings, meter)
    tracer_provider = create_tracer_provider(settings, resource, meter=meter,
                                             tenant_label=labeler.label, scrubber=scrubber)
    logger_provider = create_logger_provider(settings, resource, scrubber=scrubber, meter=meter)
    _set_globals(tracer_provider, meter_provider, logger_provider)
    from otel_crm._internal.propagation import install_propagator

    install_propagator(settings)
    quiet_exporter_logs()
    install_log_handlers(settings, logger_provider, scrubber=scrubber)
    runtime = state.Runtime(settings=settings, tracer_provider=tracer_provider,
                            meter_provider=meter_provider, logger_provider=logger_provider,
                            tenant_labeler=labeler, scrubber=scrubber)
    install_exit_hooks(lambda: _shutdown_providers(runtime), settings.shutdown_timeout_seconds)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=lambda: renew_process_identity(runtime))
    return runtime


def renew_process_identity(runtime: state.Runtime) -> None:
    """After a fork (gunicorn/uWSGI workers, --preload included) each worker is its own process.

    The SDK's providers already merge a fresh service.instance.id into their resource after a
    fork (so workers do not push cumulative series under one identity); we add the worker's own
    process.pid, which the SDK leaves at the parent's, and free the metrics pipeline of locks
    held by parent threads (see `restart_after_fork`)."""
    # Independent steps: one failing must not cost the other.
    if runtime.meter_provider is not None:
        try:
            restart_after_fork(runtime.meter_provider)
        except Exception as exc:
            internal_error("fork", exc)
    if runtime.tenant_labeler is not None:
        try:
            runtime.tenant_labeler.after_fork()
        except Exception as exc:
            internal_error("fork", exc)
    pid = Resource({semconv.PROCESS_PID: os.getpid()})
    for provider in (runtime.tracer_provider, runtime.meter_provider, runtime.logger_provider):
        try:
            provider._update_resource(pid)
        except Exception as exc:
            internal_error("fork", exc)


def _set_globals(tracer_provider: Any, meter_provider: Any, logger_provider: Any) -> None:
    current = trace.get_tracer_provider()
    if type(current).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider"):
        _log.warning("otel_crm: a tracer provider (%s) was already installed; otel_crm's helpers use "
                     "their own, but instrumentations keep the first one", type(current).__name__)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    set_logger_provider(logger_provider)


def _shutdown_providers(runtime: state.Runtime) -> None:
    # Order matters: ending traces feeds RED metrics, so metrics flush last. Runs once.
    if runtime.extras.setdefault("shut_down", False):
        return
    runtime.extras["shut_down"] = True
    for provider in (runtime.tracer_provider, runtime.logger_provider, runtime.meter_provider):
        if provider is None:
            continue
        try:
            provider.shutdown()
        except Exception as exc:
            internal_error("shutdown", exc)


def is_configured() -> bool:
    return _configured is not None


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop every signal, waiting at most `timeout` seconds (default: the
    shutdown_timeout_seconds setting). Returns False when the deadline passed."""
    runtime = _configured
    if runtime is None:
        return True
    limit = runtime.settings.shutdown_timeout_seconds if timeout is None else timeout
    return run_with_deadline(lambda: _shutdown_providers(runtime), limit, "shutdown")
