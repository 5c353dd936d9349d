"""The one module touching the SDK's private names: its checks pass on the pinned SDK, its fallbacks
keep results the same, a failed check warns once, and no other module touches private SDK names."""

from __future__ import annotations

import ast
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

import otel_crm
from otel_crm._internal import sdk_compat
from tests.unit.test_exporters import fork_only, in_child

PACKAGE = Path(otel_crm.__file__).resolve().parent


def test_every_assumption_holds_for_the_pinned_sdk() -> None:
    flags = {name: getattr(sdk_compat, name) for name in sdk_compat.__all__ if name.isupper()}
    assert flags and all(flags.values()), flags


def test_a_failed_check_degrades_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        assert sdk_compat.check_feature("test feature", "something is lost", lambda: 1 / 0 == 0) is False
        assert sdk_compat.check_feature("test feature", "something is lost", lambda: False) is False
    lines = [r.getMessage() for r in caplog.records if "test feature" in r.getMessage()]
    assert len(lines) == 1 and "something is lost" in lines[0]


def test_span_parts_without_the_fields_give_the_same_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    span = sdk_compat._probe_span()[0]
    direct = sdk_compat.span_parts(span)
    monkeypatch.setattr(sdk_compat, "SPAN_PARTS_DIRECT", False)
    public = sdk_compat.span_parts(span)
    assert dict(direct[0] or {}) == dict(public[0] or {}) == {"a": 1}
    assert list(direct[1]) == list(public[1]) and list(direct[2]) == list(public[2])


def test_attributes_dict_is_the_inner_dict_or_the_mapping_itself() -> None:
    bounded = BoundedAttributes(attributes={"a": 1})
    assert type(sdk_compat.attributes_dict(bounded)) is dict and sdk_compat.attributes_dict(bounded) == {"a": 1}
    plain = {"b": 2}
    assert sdk_compat.attributes_dict(plain) is plain


def test_span_attributes_is_the_plain_dict_or_the_public_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    span = TracerProvider(shutdown_on_exit=False).get_tracer("t").start_span("s", attributes={"a": 1, "b": "x"})
    span.end()
    direct = sdk_compat.span_attributes(span)
    assert type(direct) is dict and direct == {"a": 1, "b": "x"} == dict(span.attributes or {})

    class Foreign:  # a span of another make: no SDK fields
        attributes = {"c": 3}

    assert sdk_compat.span_attributes(Foreign()) == {"c": 3}  # type: ignore[arg-type]
    monkeypatch.setattr(sdk_compat, "ATTRIBUTES_DICT", False)
    public = sdk_compat.span_attributes(span)
    assert type(public) is not dict and dict(public) == direct


def test_update_resource_merges_and_is_skipped_when_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider(resource=Resource({"service.name": "s"}), shutdown_on_exit=False)
    sdk_compat.update_resource(provider, Resource({"process.pid": 42}))
    assert provider.resource.attributes == {"service.name": "s", "process.pid": 42}
    monkeypatch.setattr(sdk_compat, "RESOURCE_UPDATABLE", False)
    sdk_compat.update_resource(provider, Resource({"process.pid": 43}))
    assert provider.resource.attributes["process.pid"] == 42


def test_active_span_processor_is_none_when_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    assert sdk_compat.active_span_processor(provider) is not None
    monkeypatch.setattr(sdk_compat, "SPAN_PROCESSOR_READABLE", False)
    assert sdk_compat.active_span_processor(provider) is None


def test_unknown_exporter_internals_are_left_alone_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    class Unknown:
        pass

    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        assert sdk_compat.batch_queue(Unknown()) == (None, 0)
        assert sdk_compat.wrap_grpc_calls(Unknown(), lambda stub, channel: stub) is False
    assert "drops the oldest item, uncounted" in caplog.text
    assert "does not wait for exports in flight" in caplog.text


class Recording(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exported: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def counter_values(exported: Sequence[MetricsData], name: str) -> list[float]:
    return [point.value for data in exported for rm in data.resource_metrics for sm in rm.scope_metrics
            for metric in sm.metrics if metric.name == name for point in metric.data.data_points]


@fork_only
@pytest.mark.parametrize("held", ["collection", "export"])
def test_child_forked_while_a_parent_thread_holds_the_pipeline_still_exports(held: str) -> None:
    exporter = Recording()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    counter = provider.get_meter("t").create_counter("orders")
    counter.add(2)  # the parent's count: not the child's
    lock = provider._measurement_consumer._lock if held == "collection" else reader._export_lock
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:  # a reader thread caught in the middle of its work at fork time
        with lock:
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert holding.wait(5)

    def child() -> str:
        sdk_compat.restart_metrics_after_fork(provider)
        counter.add(5)
        finished = threading.Event()
        threading.Thread(target=lambda: (provider.force_flush(2_000), finished.set()), daemon=True).start()
        if not finished.wait(3):
            return "hung"
        return repr(counter_values(exporter.exported, "orders"))

    try:
        assert in_child(child) == "[5]"
    finally:
        release.set()
        thread.join()
        provider.shutdown()


@fork_only
def test_observable_callbacks_survive_the_restart() -> None:
    exporter = Recording()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    provider.get_meter("t").create_observable_gauge("pool.size", callbacks=[lambda _: [Observation(7)]])

    def child() -> str:
        sdk_compat.restart_metrics_after_fork(provider)
        provider.force_flush(2_000)
        return repr(counter_values(exporter.exported, "pool.size"))

    try:
        assert in_child(child) == "[7]"
    finally:
        provider.shutdown()


@fork_only
def test_a_reader_added_after_setup_still_exports_in_the_child() -> None:
    exporter = Recording()
    provider = MeterProvider(metric_readers=[], shutdown_on_exit=False)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider.add_metric_reader(reader)
    counter = provider.get_meter("t").create_counter("orders")

    def child() -> str:
        sdk_compat.restart_metrics_after_fork(provider)
        counter.add(4)
        reader.collect()  # the provider's force_flush only knows the readers it was built with
        return repr(counter_values(exporter.exported, "orders"))

    try:
        assert in_child(child) == "[4]"
    finally:
        provider.shutdown()


# --- nobody else touches private SDK names ------------------------------------------------------------

# The logs signal is published under underscored modules: these are its public import paths.
_PUBLIC_UNDERSCORED = {"_logs", "_log_exporter"}
# Underscored, yet public: os._exit.
_STDLIB_PUBLIC = {"_exit", "_getframe"}
# Private names of the SDK we know of (also caught when a module of ours defines the same name).
_KNOWN_SDK_PRIVATE = {
    "_update_resource", "_active_span_processor", "_measurement_consumer", "_reader_storages", "_sdk_config",
    "_async_instruments", "_export_lock", "_meters", "_instrument_registration_lock", "_stub", "_client",
    "_preferred_temporality", "_preferred_aggregation", "_batch_processor", "_queue", "_max_queue_size",
    "_attributes", "_events", "_links", "_instrumentation_info", "_dict", "_context", "_parent", "_status",
    "_start_time", "_end_time", "_resource", "_get_attributes", "_BaseConfigurator", "_add_event", "_add_link",
    "_new_links"}
# Left to the modules' owners (sampling and logging are being reworked elsewhere): the tail
# sampler's hot path reads the fields SPAN_FIELDS_DIRECT vouches for, and its kept-span copy the
# attributes' dict; the OTLP log handler overrides LoggingHandler._get_attributes.
_STILL_ALLOWED = {
    # The sampler's hot path reads span fields directly when sdk_compat.SPAN_FIELDS_DIRECT vouches for them.
    "_internal/sampling/tail.py": {"_context", "_parent", "_status", "_events", "_start_time", "_end_time",
                                   "_status_code", "_dq"},
    "_internal/sampling/spans.py": {"_dict"},
    "_internal/logs.py": {"_get_attributes"},
    # The SQLAlchemy instrumentation's internals (not the SDK's), used only while the source
    # fingerprints of that code match (see the module).
    "_internal/integrations/sqlalchemy_fast.py": {
        "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", "_SUPPRESS_INSTRUMENTATION_KEY",
        "_SUPPRESS_INSTRUMENTATION_KEY_PLAIN",
        "_StabilityMode", "_engine_attrs", "_get_attributes_from_cursor_or_conn", "_get_db_name_from_cursor_or_conn",
        "_initialized",
        "_sem_conv_opt_in_mode_db", "_sem_conv_opt_in_mode_http", "_set_db_client_span_attributes"},
    # The Flask/WSGI instrumentations' own helpers, which otel_crm's Flask hooks call as upstream's
    # hooks do; installed only on the instrumentation version they were checked against.
    "_internal/integrations/flask_hooks.py": {
        "_SPAN_KEY", "_StabilityMode", "_excluded_urls", "_get_current_object", "_report_new", "_report_old",
        "_server_active_requests_count_attrs_new", "_server_active_requests_count_attrs_old",
        "_server_duration_attrs_new", "_server_duration_attrs_old", "_start_internal_or_server_span",
        # the second pass over the request attributes, on the SDK's span (its differential test)
        "_attributes", "_dict", "_end_time"},
    "_internal/integrations/request_attributes.py": {
        "_apply_user_agent_attributes", "_report_old", "_set_http_flavor_version", "_set_http_method",
        "_set_http_net_host", "_set_http_net_host_port", "_set_http_net_peer_name_server", "_set_http_peer_ip_server",
        "_set_http_peer_port_server", "_set_http_scheme", "_set_http_target"},
}


def _our_names(trees: dict[str, ast.Module]) -> set[str]:
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("_"):
                names.add(node.value)  # __slots__ entries, setattr names
    return names - _KNOWN_SDK_PRIVATE


def _private_uses(tree: ast.Module, ours: set[str]) -> set[str]:
    found: set[str] = set()

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__") and name not in ours

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("opentelemetry"):
            parts = (node.module or "").split(".")
            found |= {p for p in parts if p.startswith("_") and p not in _PUBLIC_UNDERSCORED}
            found |= {alias.name for alias in node.names if private(alias.name)}
        elif isinstance(node, ast.Attribute):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if private(node.attr):
                found.add(node.attr)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and private(node.args[1].value)):
            found.add(node.args[1].value)
        elif isinstance(node, ast.ClassDef):  # overriding an SDK private method
            found |= {item.name for item in node.body
                      if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name in _KNOWN_SDK_PRIVATE}
    return found - _STDLIB_PUBLIC


def test_no_other_module_touches_private_sdk_names() -> None:
    trees = {str(path.relative_to(PACKAGE)): ast.parse(path.read_text())
             for path in sorted(PACKAGE.rglob("*.py"))}
    ours = _our_names(trees)
    offenders = {}
    for name, tree in trees.items():
        if name in ("_internal/sdk_compat.py", "_internal/sdk_fast_paths.py",  # the compatibility layer
                    "_internal/fast_tracer.py", "_internal/fast_span.py", "_internal/fast_tracer_probe.py",
                    "_internal/fast_histogram.py"):
            continue
        uses = _private_uses(tree, ours) - _STILL_ALLOWED.get(name, set())
        if uses:
            offenders[name] = sorted(uses)
    assert offenders == {}


def test_the_scan_sees_private_names() -> None:
    tree = ast.parse("from opentelemetry.sdk._configuration import _BaseConfigurator\n"
                     "provider._update_resource(r)\nx = getattr(span, '_attributes', None)\n")
    assert _private_uses(tree, set()) == {"_configuration", "_BaseConfigurator", "_update_resource", "_attributes"}


def test_an_exporter_without_a_known_retry_pause_is_left_alone_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    class Unknown:
        pass

    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        assert sdk_compat.cap_retry_pause(Unknown(), 1.0) is False
    assert "exports resume up to 4 s later" in caplog.text
