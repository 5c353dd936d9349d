"""The SDK's span path against otel_crm's (fast_tracer.py), per operation; prints, writes nothing.

    .venv/bin/python bench/span_path_micro.py [--rounds 7]

Arms interleaved (order alternating per round), best of 3 timeit repeats per round, medians over the
rounds. Two pipelines: one no-op span processor (the span machinery alone), and otel_crm's composed
tail-mode pipeline (tenancy, access capture, RED, tail sampler; nothing exported).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from otel_crm._internal import traces
from otel_crm._internal.fast_tracer import FastTracerProvider
from otel_crm._internal.settings import resolve_settings


def _provider(cls: type[TracerProvider], pipeline: str) -> TracerProvider:
    resource = Resource({"service.name": "bench"})
    if pipeline == "noop":
        provider = cls(resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(SpanProcessor())
        return provider
    settings = resolve_settings({}, service_name="bench", traces_exporter=("none",), metrics_exporter=("none",),
                                logs_exporter=("none",))
    original = traces.tracer_provider_class
    traces.tracer_provider_class = lambda enabled=True: cls  # type: ignore[assignment]
    try:
        meter = MeterProvider(resource=resource, shutdown_on_exit=False).get_meter("bench")
        return traces.create_tracer_provider(settings, resource, meter=meter, downstream=SpanProcessor())
    finally:
        traces.tracer_provider_class = original


def _operations(tracer: trace.Tracer) -> dict[str, Callable[[], None]]:
    attributes = {"http.request.method": "GET", "http.route": "/leads/<int:lead_id>"}

    def start_end() -> None:
        tracer.start_span("a").end()

    def root_child() -> None:
        with (tracer.start_as_current_span("root", kind=trace.SpanKind.SERVER, attributes=attributes),
              tracer.start_as_current_span("child")):
            pass

    return {"start_span + end": start_end, "start_as_current_span root + child": root_child}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=5000)
    args = parser.parse_args()
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)
    arms = {(pipeline, name): _provider(cls, pipeline).get_tracer("bench")
            for pipeline in ("noop", "otel_crm tail") for name, cls in (("sdk", TracerProvider),
                                                                       ("otel_crm", FastTracerProvider))}
    results: dict[tuple[str, str, str], list[float]] = {}
    for round_ in range(args.rounds):
        order = list(arms.items()) if round_ % 2 == 0 else list(arms.items())[::-1]
        for (pipeline, name), tracer in order:
            for operation, run in _operations(tracer).items():
                best = min(timeit.repeat(run, number=args.number, repeat=3)) / args.number * 1e6
                results.setdefault((pipeline, operation, name), []).append(best)
    print("| pipeline | operation | SDK µs | otel_crm µs | otel_crm / SDK |")
    print("| --- | --- | ---: | ---: | ---: |")
    for pipeline in ("noop", "otel_crm tail"):
        for operation in ("start_span + end", "start_as_current_span root + child"):
            sdk_us = statistics.median(results[(pipeline, operation, "sdk")])
            ours = statistics.median(results[(pipeline, operation, "otel_crm")])
            print(f"| {pipeline} | {operation} | {sdk_us:.2f} | {ours:.2f} | {ours / sdk_us:.2f}x |")


if __name__ == "__main__":
    main()
