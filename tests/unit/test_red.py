from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

import otel_crm
from otel_crm.testing import CapturedTelemetry


def _remote_parent() -> trace.Context:  # type: ignore[name-defined]
    parent = SpanContext(trace_id=0x1234, span_id=0x99, is_remote=True, trace_flags=TraceFlags(1))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def test_every_local_root_is_counted_and_children_are_not(otel_crm_telemetry: CapturedTelemetry) -> None:
    tracer = otel_crm_telemetry.runtime.tracer()
    for _ in range(3):
        with tracer.start_as_current_span("nightly_sync"), tracer.start_as_current_span("child"):
            pass
    with tracer.start_as_current_span("GET /leads", kind=SpanKind.SERVER, context=_remote_parent(),
                                      attributes={"http.request.method": "GET", "http.route": "/leads",
                                                  "http.response.status_code": 200}):
        pass
    with tracer.start_as_current_span("CREATE leads", kind=SpanKind.CLIENT):  # startup DDL: not an entry
        pass
    points = otel_crm_telemetry.metric_points("crm.requests")
    by_operation = {p.attributes["crm.operation.name"]: p.value for p in points}
    assert by_operation == {"nightly_sync": 3, "GET /leads": 1}
    http_point = next(p for p in points if p.attributes["crm.operation.name"] == "GET /leads")
    assert http_point.attributes["http.route"] == "/leads"
    assert http_point.attributes["http.response.status_code"] == 200


def test_errors_are_counted_with_error_type(otel_crm_telemetry: CapturedTelemetry) -> None:
    tracer = otel_crm_telemetry.runtime.tracer()
    try:
        with tracer.start_as_current_span("import_contacts"):
            raise ValueError("bad row")
    except ValueError:
        pass
    with tracer.start_as_current_span("GET /x") as span:
        span.set_attribute("error.type", "500")
        span.set_status(Status(StatusCode.ERROR))
    errors = otel_crm_telemetry.metric_points("crm.request.errors")
    assert {p.attributes["error.type"] for p in errors} == {"ValueError", "500"}


def test_duration_histogram_is_in_seconds_with_tenant(otel_crm_telemetry: CapturedTelemetry) -> None:
    tracer = otel_crm_telemetry.runtime.tracer()
    with otel_crm.tenant_context("acme"):
        span = tracer.start_span("job", start_time=1_000_000_000)
        span.end(end_time=3_500_000_000)
    points = otel_crm_telemetry.metric_points("crm.request.duration")
    assert otel_crm_telemetry.metric_unit("crm.request.duration") == "s"
    assert points[0].sum == 2.5 and points[0].attributes["crm.tenant.id"] == "acme"
    assert 2.0 in points[0].explicit_bounds and 1.0 in points[0].explicit_bounds


def test_tenants_beyond_the_limit_become_other() -> None:
    from otel_crm.testing import capture_telemetry

    with capture_telemetry(tenant_metric_limit=2) as telemetry:
        tracer = telemetry.runtime.tracer()
        for tenant in ("a", "b", "c", "d"):
            with otel_crm.tenant_context(tenant), tracer.start_as_current_span("job"):
                pass
        tenants = {p.attributes["crm.tenant.id"] for p in telemetry.metric_points("crm.requests")}
        assert tenants == {"a", "b", "__other__"}
        assert telemetry.metric_sum("crm.metric.overflow") == 2


def test_repeated_requests_are_counted_each_time_and_overflows_each_time() -> None:
    from otel_crm.testing import capture_telemetry

    with capture_telemetry(tenant_metric_limit=1) as telemetry:
        tracer = telemetry.runtime.tracer()
        for tenant in ("a", "b", "a", "b", "b"):  # the attribute sets are cached after the first time
            with otel_crm.tenant_context(tenant), tracer.start_as_current_span("job"):
                pass
        counts = {p.attributes["crm.tenant.id"]: p.value for p in telemetry.metric_points("crm.requests")}
        assert counts == {"a": 2, "__other__": 3}
        assert telemetry.metric_sum("crm.metric.overflow") == 3  # every overflowed recording, not once
        durations = {p.attributes["crm.tenant.id"]: p.count for p in telemetry.metric_points("crm.request.duration")}
        assert durations == counts


def test_counts_are_cumulative_sums_and_a_forked_child_starts_from_zero() -> None:
    from otel_crm._internal import forks
    from otel_crm.testing import capture_telemetry

    with capture_telemetry() as telemetry:
        tracer = telemetry.runtime.tracer()
        for _ in range(3):
            with tracer.start_as_current_span("job"):
                pass
        assert telemetry.metric_sum("crm.requests") == 3
        with tracer.start_as_current_span("job"):
            pass
        # delta points, one per collection: an observable counter's deltas as a counter's would be
        assert [p.value for p in telemetry.metric_points("crm.requests")] == [3, 1]
        assert any(name.startswith("red: request counts") for name in forks.registered())


def test_two_processors_on_one_meter_are_both_reported() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from otel_crm._internal.red import RedMetricsProcessor

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("otel_crm")
    providers = []
    for _ in range(2):  # the SDK calls only the first instrument's callbacks per name and meter
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(RedMetricsProcessor(meter))
        providers.append(provider)
    for provider in providers:
        with provider.get_tracer("t").start_as_current_span("job"):
            pass
    data = reader.get_metrics_data()
    assert data is not None
    values = [p.value for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              if m.name == "crm.requests" for p in m.data.data_points]
    assert values == [2]


class _RedBroke(Exception):
    pass


def test_a_failure_in_red_recording_is_reported_and_the_span_ends(no_reraise: None, caplog) -> None:  # type: ignore[no-untyped-def]
    """RED runs on the request thread: what it raises is caught, logged and counted (and re-raised
    only under pytest, which `no_reraise` switches off here)."""
    import pytest as _pytest
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from otel_crm._internal import safety
    from otel_crm._internal.red import RedMetricsProcessor

    processor = RedMetricsProcessor(MeterProvider().get_meter("t"))

    def fail(span: object) -> None:
        raise _RedBroke("boom")

    processor._record = fail  # type: ignore[method-assign]
    span = TracerProvider(shutdown_on_exit=False).get_tracer("t").start_span("GET /", kind=SpanKind.SERVER)
    span.end()
    processor.on_end(span)  # swallowed
    assert any("internal error in red_metrics" in r.getMessage() for r in caplog.records)
    safety.reraise_internal_errors(True)
    with _pytest.raises(_RedBroke):
        processor.on_end(span)


def test_the_span_kind_tells_entries_apart(otel_crm_telemetry: CapturedTelemetry) -> None:
    """An unrouted SERVER span is counted under its method; an INTERNAL or CONSUMER root of the same
    name and attributes under its name (the raw key remembers the kind: SERVER as 0, never equal)."""
    tracer = otel_crm_telemetry.runtime.tracer()
    for kind in (SpanKind.SERVER, SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.INTERNAL):
        with tracer.start_as_current_span("GET /raw/7", kind=kind, attributes={"http.request.method": "GET"}):
            pass
    points = otel_crm_telemetry.metric_points("crm.requests")
    assert {p.attributes["crm.operation.name"]: p.value for p in points} == {"GET": 2, "GET /raw/7": 3}
