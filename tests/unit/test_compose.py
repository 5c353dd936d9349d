"""compose(): the one recipe, with no global side effect, shared by configure() and otel_crm.testing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_crm._internal.compose import compose
from otel_crm._internal.scrub_pipeline import ScrubbingSpanExporter
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.traces import CountingBatchSpanProcessor
from otel_crm.testing import capture_telemetry


def _processors(runtime) -> list:  # type: ignore[no-untyped-def]
    processors = runtime.tracer_provider._active_span_processor._span_processors
    return [type(p).__name__ for p in processors]


def test_compose_sets_nothing_global() -> None:
    code = textwrap.dedent("""
        import atexit, json, logging, os, signal
        from opentelemetry import metrics, propagate, trace
        from otel_crm._internal import forks
        from otel_crm._internal.compose import compose
        from otel_crm._internal.settings import resolve_settings
        before = (dict(os.environ), list(logging.getLogger().handlers), atexit._ncallbacks(),
                  signal.getsignal(signal.SIGTERM), forks.registered(), propagate.get_global_textmap())
        runtime = compose(resolve_settings(sampling_mode="tail", log_format="json"))
        after = (dict(os.environ), list(logging.getLogger().handlers), atexit._ncallbacks(),
                 signal.getsignal(signal.SIGTERM), forks.registered(), propagate.get_global_textmap())
        print(json.dumps({"same": [b == a for b, a in zip(before, after)],
                          "tracer": type(trace.get_tracer_provider()).__name__,
                          "meter": type(metrics.get_meter_provider()).__name__,
                          "built": runtime.tracer_provider is not None and runtime.origin == "configure"}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    # compose's own tail sampler registers a fork hook: only its own, nothing of the runtime's
    assert out["same"][:4] == [True] * 4 and out["same"][5] is True
    assert out["tracer"] == "ProxyTracerProvider" and out["meter"] == "_ProxyMeterProvider"
    assert out["built"] is True


def test_testing_runs_the_production_recipe() -> None:
    settings = resolve_settings({}, sampling_mode="tail", traces_exporter=["none"], metrics_exporter=["none"],
                                logs_exporter=["none"], log_format="none")
    production = compose(settings)
    with capture_telemetry(sampling_mode="tail") as telemetry:
        assert telemetry.runtime.origin == "testing"
        assert _processors(telemetry.runtime) == ["TenantSpanProcessor", "ServerSpanCapture", "RedMetricsProcessor",
                                                  "TailSamplingProcessor"]
    # production without exporters has no export chain, otherwise the same processors in the same order
    assert _processors(production) == ["TenantSpanProcessor", "ServerSpanCapture", "RedMetricsProcessor"]
    production.shutdown()


def test_a_given_exporter_is_scrubbed_once_and_synchronous() -> None:
    exporter = InMemorySpanExporter()
    runtime = compose(resolve_settings({}, sampling_mode="off", traces_exporter=["otlp"], metrics_exporter=["none"],
                                       logs_exporter=["none"]),
                      span_exporter=exporter, metric_readers=(InMemoryMetricReader(),),
                      log_exporter=InMemoryLogRecordExporter())  # type: ignore[no-untyped-call]
    chain = runtime.tracer_provider._active_span_processor._span_processors[-1]  # type: ignore[union-attr]
    assert isinstance(chain, SimpleSpanProcessor), "the given exporter replaces OTLP, no batch thread"
    scrubbing = chain.span_exporter
    assert isinstance(scrubbing, ScrubbingSpanExporter) and scrubbing._inner is exporter
    runtime.tracer_provider.get_tracer("t").start_span("card 4111 1111 1111 1111").end()  # type: ignore[union-attr]
    assert [s.name for s in exporter.get_finished_spans()] == ["card [REDACTED:card]"]
    runtime.shutdown()


def test_configured_exporters_are_each_scrubbed_once() -> None:
    runtime = compose(resolve_settings({}, sampling_mode="off", traces_exporter=["otlp", "console"],
                                       metrics_exporter=["none"], logs_exporter=["none"],
                                       otlp_endpoint="http://127.0.0.1:9"))
    fanout = runtime.tracer_provider._active_span_processor._span_processors[-1]  # type: ignore[union-attr]
    assert isinstance(fanout, SynchronousMultiSpanProcessor)
    batch, console = fanout._span_processors
    assert isinstance(batch, CountingBatchSpanProcessor) and isinstance(console, SimpleSpanProcessor)
    for exporter in (batch.span_exporter, console.span_exporter):
        assert isinstance(exporter, ScrubbingSpanExporter)
        assert not isinstance(exporter._inner, ScrubbingSpanExporter)
    runtime.shutdown()


def test_scrub_mode_off_still_corrects_but_never_scrubs() -> None:
    exporter = InMemorySpanExporter()
    runtime = compose(resolve_settings({}, sampling_mode="off", scrub_mode="off", metrics_exporter=["none"],
                                       logs_exporter=["none"]), span_exporter=exporter)
    assert runtime.scrubber is None
    chain = runtime.tracer_provider._active_span_processor._span_processors[-1]  # type: ignore[union-attr]
    rewriter = chain.span_exporter  # corrections and SQL literals still apply; no scrubber
    assert rewriter._inner is exporter and rewriter._scrubber is None
    runtime.shutdown()


def test_disabled_composes_nothing() -> None:
    runtime = compose(resolve_settings({}, disabled=True))
    assert (runtime.tracer_provider, runtime.meter_provider, runtime.logger_provider) == (None, None, None)


def test_a_scrub_callback_decides_keep_or_redact() -> None:
    from otel_crm._internal.scrub_patterns import KEEP, REDACT, ScrubMatch

    def keep_deal_ids(match: ScrubMatch) -> str:
        return KEEP if match.key == "crm.deal.id" else REDACT

    runtime = compose(resolve_settings({}), scrub_callback=keep_deal_ids)
    try:
        assert runtime.scrubber is not None
        assert runtime.scrubber.scrub_value("crm.deal.id", "4111111111111111") == "4111111111111111"
        assert "4111111111111111" not in str(runtime.scrubber.scrub_value("note", "4111111111111111"))
    finally:
        runtime.shutdown()


def test_configure_prints_the_startup_report_in_the_development_profile() -> None:
    import subprocess
    import sys

    code = ("import otel_crm; otel_crm.configure(environment='development', traces_exporter=('none',), "
            "metrics_exporter=('none',), logs_exporter=('none',), log_format='text', "
            "otlp_endpoint='http://user:secret@127.0.0.1:4317'); otel_crm.shutdown()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stdout.splitlines() if "otel_crm: service=" in line]
    assert len(lines) == 1, result.stdout + result.stderr
    assert "profile=development" in lines[0] and "secret" not in lines[0]
