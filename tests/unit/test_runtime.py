"""The one current runtime, and what a Runtime does itself: cache, tenant label, shut down once."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from otel_crm._internal import runtime as runtime_module
from otel_crm._internal.runtime import (
    Runtime,
    clear_current_runtime,
    current_runtime,
    installed_runtime,
    set_current_runtime,
)
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import TenantLabeler


class Provider:
    def __init__(self, name: str, calls: list[str], fail: bool = False) -> None:
        self.name, self.calls, self.fail = name, calls, fail

    def shutdown(self) -> None:
        self.calls.append(self.name)
        if self.fail:
            raise RuntimeError("exporter gone")


def test_no_field_is_typed_any() -> None:
    hints = typing.get_type_hints(Runtime)
    assert all(typing.Any not in (hint, *typing.get_args(hint)) for hint in hints.values()), hints
    assert "extras" not in {f.name for f in dataclasses.fields(Runtime)}


def test_shutdown_runs_once_traces_first_metrics_last(no_reraise: None) -> None:
    calls: list[str] = []
    runtime = Runtime(settings=resolve_settings({}), tracer_provider=Provider("traces", calls, fail=True),  # type: ignore[arg-type]
                      meter_provider=Provider("metrics", calls),  # type: ignore[arg-type]
                      logger_provider=Provider("logs", calls))  # type: ignore[arg-type]
    runtime.shutdown()
    runtime.shutdown()
    assert calls == ["traces", "logs", "metrics"], "a failing provider costs the others nothing"


def test_what_is_still_queued_is_counted_before_the_last_metric_export() -> None:
    from otel_crm._internal import accounting

    accounting.reset()
    calls: list[str] = []

    class Metrics(Provider):
        def shutdown(self) -> None:  # the last export: the drops must be counted by now
            calls.append(str(accounting.snapshot()["traces"].dropped))

    accounting.produce("traces", 2)
    runtime = Runtime(settings=resolve_settings({}), origin="configure",
                      tracer_provider=Provider("traces", calls),  # type: ignore[arg-type]
                      meter_provider=Metrics("metrics", calls),  # type: ignore[arg-type]
                      logger_provider=Provider("logs", calls))  # type: ignore[arg-type]
    try:
        runtime.shutdown()
        assert calls == ["traces", "logs", "{'shutdown': 2}"]
    finally:
        accounting.reset()


def test_before_anything_is_set_the_runtime_comes_from_the_environment() -> None:
    previous = installed_runtime()
    clear_current_runtime()
    try:
        lazily = current_runtime()
        assert lazily.origin == "environment" and lazily.tracer_provider is None
        assert current_runtime() is lazily and installed_runtime() is lazily
        mine = Runtime(settings=resolve_settings({}), origin="testing")
        assert set_current_runtime(mine) is lazily and current_runtime() is mine
    finally:
        if previous is not None:
            set_current_runtime(previous)
        else:
            clear_current_runtime()


def test_tenant_labels_go_through_the_labeler() -> None:
    runtime = Runtime(settings=resolve_settings({}), cardinality=TenantLabeler(1))
    assert runtime.tenant_label("m", "acme") == "acme"
    assert runtime.tenant_label("m", "globex") == "__other__"
    assert Runtime(settings=resolve_settings({})).tenant_label("m", "globex") == "globex"
    assert runtime.tenant_label("m", None) is None


def test_cached_builds_once() -> None:
    runtime = Runtime(settings=resolve_settings({}))
    built: list[int] = []
    assert runtime.cached("k", lambda: built.append(1) or 7) == 7
    assert runtime.cached("k", lambda: built.append(1) or 8) == 7
    assert built == [1]


def test_one_global_only() -> None:
    globals_of_type = [name for name, value in vars(runtime_module).items()
                       if name.startswith("_") and not name.startswith("__") and name != "_T"
                       and not callable(value) and name not in ("_lock",)]
    assert globals_of_type == ["_current"]
    with pytest.raises(ImportError):
        __import__("otel_crm._internal.config")


def test_trace_sampled_per_mode() -> None:
    """Off and collector: everything is exported (true); head: the flag; nothing composed: no claim;
    tail: the tail sampler's answer (None while undecided)."""
    from otel_crm._internal.runtime import Runtime
    from otel_crm._internal.settings import resolve_settings
    from otel_crm.testing import capture_telemetry

    for mode in ("off", "collector"):
        with capture_telemetry(sampling_mode=mode) as telemetry:
            assert telemetry.runtime.trace_sampled(1, True) is True
    with capture_telemetry(sampling_mode="head") as telemetry:
        assert telemetry.runtime.tail_sampler is None
        assert telemetry.runtime.trace_sampled(1, True) is True
        assert telemetry.runtime.trace_sampled(1, False) is False
    assert Runtime(settings=resolve_settings({})).trace_sampled(1, True) is None
    with capture_telemetry(sampling_mode="tail", sampling_ratio=1.0) as telemetry:
        runtime = telemetry.runtime
        assert runtime.tail_sampler is not None
        with runtime.tracer("t").start_as_current_span("root") as root:
            trace_id = root.get_span_context().trace_id
            assert runtime.trace_sampled(trace_id, True) is None  # undecided: no claim
        assert runtime.trace_sampled(trace_id, True) is True
        assert runtime.trace_sampled(trace_id, False) is False  # an unsampled span is never exported
