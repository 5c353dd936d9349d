"""The SDK's histogram `record` against otel_crm's (fast_histogram.py); prints, writes nothing.

    .venv/bin/python bench/histogram_micro.py [--rounds 7] [--recordings 20000]

One process, arms interleaved (order alternating per round), medians over the rounds. Each arm is
a fresh MeterProvider with otel_crm's views and one in-memory reader, recording the attribute set
the Flask instrumentation records for `http.server.request.duration` (a fresh dict per recording,
as the instrumentation builds one per request), inside a sampled span's context (the default
trace_based exemplar filter offers every recording) and inside an unsampled one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_crm._internal.fast_histogram import FastHistogram, fast_histogram
from otel_crm._internal.metrics import semconv_views

ATTRIBUTES = {"http.request.method": "GET", "url.scheme": "http", "http.response.status_code": 200,
              "network.protocol.version": "1.1", "http.route": "/leads/<int:lead_id>"}


def _histogram() -> Any:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()], views=semconv_views(),
                             resource=Resource({"service.name": "bench"}), shutdown_on_exit=False)
    return provider.get_meter("bench").create_histogram("http.server.request.duration", "s")


def _time(histogram: Any, context: Any, recordings: int) -> float:
    record = histogram.record
    started = time.perf_counter()
    for _ in range(recordings):
        record(0.0123, dict(ATTRIBUTES), context)
    return (time.perf_counter() - started) / recordings * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--recordings", type=int, default=20000)
    args = parser.parse_args()
    fast = fast_histogram(_histogram())
    if not isinstance(fast, FastHistogram):
        sys.exit("the fast histogram path is off (its probe failed: see the warning above)")
    arms = {"sdk": _histogram(), "fast": fast}
    for sampled in (True, False):
        span = NonRecordingSpan(SpanContext(5, 6, False, TraceFlags(1 if sampled else 0)))
        context = trace.set_span_in_context(span)
        times: dict[str, list[float]] = {name: [] for name in arms}
        for round_ in range(args.rounds):
            for name in (("sdk", "fast") if round_ % 2 == 0 else ("fast", "sdk")):
                times[name].append(_time(arms[name], context, args.recordings))
        sdk, ours = statistics.median(times["sdk"]), statistics.median(times["fast"])
        print(f"{'sampled' if sampled else 'unsampled'} span: SDK record {sdk:.2f} µs, fast record {ours:.2f} µs, "
              f"ratio {ours / sdk:.2f}")


if __name__ == "__main__":
    main()
