"""Metrics: advised buckets. (A pipeline a forked child can always export from: test_sdk_compat.py.)"""

from __future__ import annotations

from otel_crm._internal import semconv
from otel_crm._internal.metrics import semconv_views


def test_http_duration_uses_the_advised_second_buckets() -> None:
    views = {view._instrument_name: view for view in semconv_views()}
    buckets = views[semconv.HTTP_SERVER_REQUEST_DURATION]._aggregation._boundaries
    assert list(buckets) == [float(b) for b in semconv.HTTP_DURATION_BUCKETS]
    assert buckets[0] < 0.01 and buckets[-1] <= 10, "seconds, not milliseconds"

