"""otel_crm's Flask hooks against upstream's: the same requests through a real Flask app, once with
the Flask instrumentation's own hooks and once with otel_crm's, must finish the same spans (name,
kind, attributes in order, status, events, parent) and record the same metric points."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import flask
import pytest
from opentelemetry.instrumentation import _semconv
from opentelemetry.instrumentation import flask as flask_instrumentation
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_crm._internal.fast_tracer import tracer_provider_class
from otel_crm._internal.integrations import flask_hooks
from otel_crm._internal.integrations.flask_hooks import install_flask_hooks, uninstall_flask_hooks
from otel_crm._internal.runtime import Runtime, clear_current_runtime, set_current_runtime
from otel_crm._internal.settings import resolve_settings

MODES = [_semconv._StabilityMode.DEFAULT, _semconv._StabilityMode.HTTP, _semconv._StabilityMode.HTTP_DUP]
CAPTURE = {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-custom.*,user-agent",
           "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "x-reply,content-type",
           "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": "x-custom-secret"}


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    uninstall_flask_hooks()
    clear_current_runtime()


class TenantAtStart(SpanProcessor):
    """Sets an attribute in on_start, as otel_crm's tenancy does: the request attributes set again
    after the span started then come after it (the order a differential test must see kept)."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        span.set_attribute("crm.tenant.id", "acme")


def build_app(fast: bool, mode: Any, excluded: str | None, monkeypatch: pytest.MonkeyPatch, provider: str = "sdk",
              **options: Any) -> tuple[flask.Flask, InMemorySpanExporter, InMemoryMetricReader]:
    _semconv._OpenTelemetrySemanticConventionStability._initialize()
    monkeypatch.setitem(_semconv._OpenTelemetrySemanticConventionStability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING,
                        _semconv._OpenTelemetryStabilitySignalType.HTTP, mode)
    if fast:
        assert install_flask_hooks()
    else:
        uninstall_flask_hooks()
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    if provider == "sdk":
        tracer_provider = TracerProvider()
    else:  # otel_crm's provider with a processor setting an attribute at the start
        tracer_provider = tracer_provider_class(True)()
        tracer_provider.add_span_processor(TenantAtStart())
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = flask.Flask(__name__)

    @app.route("/ok")
    def ok() -> str:
        return "ok"

    @app.route("/leads/<int:lead_id>")
    def lead(lead_id: int) -> dict[str, int]:
        return {"id": lead_id}

    @app.route("/boom")
    def boom() -> str:
        raise ValueError("boom")

    @app.route("/reply", methods=["GET", "POST"])
    def reply() -> flask.Response:
        return flask.Response("r", headers={"X-Reply": "yes"})

    @app.route("/stream")
    def stream() -> flask.Response:
        def chunks() -> Iterator[str]:
            yield "a"
            yield flask.request.path

        return flask.Response(flask.stream_with_context(chunks()))

    FlaskInstrumentor().instrument_app(app, tracer_provider=tracer_provider, excluded_urls=excluded,
                                       meter_provider=MeterProvider(metric_readers=[reader]), **options)
    return app, exporter, reader


REQUESTS: list[tuple[str, str, dict[str, str], dict[str, Any]]] = [
    ("GET", "/ok", {}, {}),
    ("GET", "/missing/page", {}, {}),
    ("GET", "/boom", {}, {}),
    ("GET", "/leads/42?sort=name&x=%20y", {"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"}, {}),
    ("POST", "/reply", {"X-Custom-Id": "7", "X-Custom-Secret": "s3cret", "User-Agent": "pytest-client"}, {}),
    ("GET", "/reply", {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
     {"REMOTE_PORT": "53123", "REMOTE_HOST": "client.example", "SERVER_PROTOCOL": "HTTP/1.0"}),
    ("FOO", "/ok", {}, {}),
    ("get", "/ok", {"Host": "crm.example:8443"}, {"RAW_URI": "/ok?raw=1", "wsgi.url_scheme": "https"}),
    ("GET", "/stream", {}, {}),
    ("GET", "/ok", {}, {"REMOTE_ADDR": ""}),
]


def span_view(span: ReadableSpan) -> tuple[Any, ...]:
    parent = span.parent
    return (span.name, span.kind, list((span.attributes or {}).items()), span.status.status_code,
            span.status.description, [(event.name, list((event.attributes or {}).items())) for event in span.events],
            parent.is_remote if parent is not None else None, parent.span_id if parent is not None and parent.is_remote
            else None, span.instrumentation_scope.name if span.instrumentation_scope else None)


def metric_view(reader: InMemoryMetricReader) -> list[tuple[Any, ...]]:
    data = reader.get_metrics_data()
    rows = []
    for resource_metrics in data.resource_metrics if data else []:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    # durations differ run to run: the points' attributes, counts and sums of counts
                    measured = getattr(point, "count", None), getattr(point, "value", None)
                    rows.append((scope_metrics.scope.name, metric.name, metric.unit,
                                 sorted(dict(point.attributes or {}).items()), measured))
    return sorted(rows, key=repr)


def run(fast: bool, mode: Any, excluded: str | None, monkeypatch: pytest.MonkeyPatch, provider: str = "sdk",
        **options: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    app, exporter, reader = build_app(fast, mode, excluded, monkeypatch, provider, **options)
    client = app.test_client()
    for method, path, headers, environ in REQUESTS:
        response = client.open(path, method=method, headers=headers, environ_overrides=environ)
        response.get_data()
        response.close()
    with app.test_request_context("/ok"):  # no before_request: teardown must leave it alone
        pass
    spans = [span_view(span) for span in exporter.get_finished_spans()]
    return spans, metric_view(reader)


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: mode.value)
@pytest.mark.parametrize("excluded", [None, "/ok,stream$", ""], ids=["default", "excluded", "empty"])
@pytest.mark.parametrize("capture", [False, True], ids=["no-headers", "headers"])
@pytest.mark.parametrize("provider", ["sdk", "otel_crm"])
def test_the_same_requests_give_the_same_telemetry(mode: Any, excluded: str | None, capture: bool, provider: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    variables = CAPTURE if capture else {}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    set_current_runtime(Runtime(settings=resolve_settings(variables)))
    upstream = run(False, mode, excluded, monkeypatch, provider)
    ours = run(True, mode, excluded, monkeypatch, provider)
    assert ours == upstream
    assert len(upstream[0]) == (5 if excluded == "/ok,stream$" else 10)
    captured = [attrs for _, _, attrs, *_ in upstream[0] if any("header" in key for key, _ in attrs)]
    assert bool(captured) is capture


@pytest.mark.parametrize("provider", ["sdk", "otel_crm"])
def test_hooks_and_sqlcommenter_options_are_kept(provider: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def request_hook(span: Any, environ: dict[str, Any]) -> None:
        span.set_attribute("http.route", "from-hook")  # the attributes set after the hook win, as upstream
        span.set_attribute("hook.path", environ["PATH_INFO"])

    def response_hook(span: Any, status: str, headers: list[tuple[str, str]]) -> None:
        span.set_attribute("hook.status", status)
        seen.append(flask_instrumentation.context.get_value("SQLCOMMENTER_ORM_TAGS_AND_VALUES"))

    set_current_runtime(Runtime(settings=resolve_settings({})))
    options = {"request_hook": request_hook, "response_hook": response_hook,
               "commenter_options": {"controller": False}}
    mode = _semconv._StabilityMode.HTTP
    ours = run(True, mode, None, monkeypatch, provider, **options)
    assert ours == run(False, mode, None, monkeypatch, provider, **options)
    if provider == "otel_crm":  # set again after the start: the tenant first, the hook's route replaced
        keys = [key for key, _ in ours[0][0][2]]
        assert keys.index("crm.tenant.id") < keys.index("http.route")
        assert ("http.route", "/ok") in ours[0][0][2]
    assert seen[0] == {"framework": f"flask:{flask_instrumentation.flask_version}", "route": "/ok"}
    assert seen[0] == seen[len(seen) // 2]


def test_apps_made_by_the_instrumented_class_use_the_installed_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    set_current_runtime(Runtime(settings=resolve_settings({})))
    install_flask_hooks()
    instrumentor = FlaskInstrumentor()
    instrumentor.instrument()
    try:
        app = flask.Flask(__name__)
        assert app.wsgi_app.__qualname__.startswith("_hooks.")
        assert app._before_request.__qualname__.startswith("_hooks.")  # type: ignore[attr-defined]
    finally:
        instrumentor.uninstrument()


def test_an_unexpected_instrumentation_keeps_upstreams_hooks(monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(flask_hooks, "CHECKED_VERSIONS", frozenset({"0.0"}))
    monkeypatch.setattr(flask_hooks, "_warned", [])
    original = flask_instrumentation._rewrapped_app
    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        assert install_flask_hooks() is False
        assert install_flask_hooks() is False
    assert flask_instrumentation._rewrapped_app is original
    assert caplog.text.count("its own hooks are used") == 1


def test_a_failure_while_installing_leaves_upstreams_hooks(monkeypatch: pytest.MonkeyPatch, no_reraise: None) -> None:
    def broken(fl: Any) -> Any:
        raise RuntimeError("broken")

    monkeypatch.setattr(flask_hooks, "_hooks", broken)
    original = flask_instrumentation._wrapped_before_request
    assert install_flask_hooks() is False
    assert flask_instrumentation._wrapped_before_request is original


@pytest.mark.parametrize("fast_spans", [True, False])
def test_the_distro_installs_the_hooks_before_the_flask_instrumentation_loads_unless_fast_spans_is_off(
        fast_spans: bool) -> None:
    from otel_crm.distro import CrmDistro

    seen: list[bool] = []

    class EntryPoint:
        name = "flask"

        def load(self) -> object:
            class Instrumentor:
                def instrument(self, **kwargs: object) -> None:
                    seen.append(flask_instrumentation._rewrapped_app.__qualname__.startswith("_hooks."))

            return Instrumentor

    set_current_runtime(Runtime(settings=resolve_settings({}, fast_spans=fast_spans)))
    CrmDistro().load_instrumentor(EntryPoint(), skip_dep_check=True)  # flask is imported: at once
    assert seen == [fast_spans]
