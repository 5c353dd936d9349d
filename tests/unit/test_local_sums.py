"""Up-down counters summed in process: the same data points as the SDK's synchronous instrument,
a forked child from zero."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_crm._internal import forks
from otel_crm._internal.local_sums import LocalUpDownCounter
from tests.unit.test_exporters import fork_only, in_child

_SEQUENCE: tuple[tuple[float, dict[str, Any] | None], ...] = (
    (1, {"http.request.method": "GET", "url.scheme": "http"}),
    (1, {"http.request.method": "POST", "url.scheme": "http"}),
    (-1, {"http.request.method": "GET", "url.scheme": "http"}), (2, None), (float("nan"), None), (1, {"tags": ["a"]}))


def _points(reader: InMemoryMetricReader, name: str) -> tuple[Any, list[tuple[tuple[Any, ...], float]]]:
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    points = sorted((tuple(sorted((k, str(v)) for k, v in p.attributes.items())), p.value)
                                    for p in metric.data.data_points)
                    return metric, points
    raise AssertionError(f"{name} not collected")


def test_the_same_points_unit_and_description_as_a_synchronous_up_down_counter() -> None:
    sync_reader, local_reader = InMemoryMetricReader(), InMemoryMetricReader()
    sync = MeterProvider(metric_readers=[sync_reader]).get_meter("m").create_up_down_counter(
        "http.server.active_requests", unit="{request}", description="in flight")
    local = LocalUpDownCounter(MeterProvider(metric_readers=[local_reader]).get_meter("m"),
                               "http.server.active_requests", "{request}", "in flight")
    for amount, attributes in _SEQUENCE:
        sync.add(amount, attributes)
        local.add(amount, attributes)
    expected_metric, expected = _points(sync_reader, "http.server.active_requests")
    metric, points = _points(local_reader, "http.server.active_requests")
    assert points == expected, "zeros included (GET went back to 0), NaN ignored"
    assert (metric.unit, metric.description, metric.data.is_monotonic) == (
        expected_metric.unit, expected_metric.description, False)


def test_rename_maps_the_recorded_attributes_once_per_set() -> None:
    calls: list[object] = []

    def rename(attributes: Any) -> dict[str, Any]:
        calls.append(attributes)
        return {"state": attributes["s"]}

    reader = InMemoryMetricReader()
    local = LocalUpDownCounter(MeterProvider(metric_readers=[reader]).get_meter("m"), "pool", rename=rename)
    for _ in range(3):
        local.add(1, {"s": "used"})
        local.add(-1, {"s": "used"})
    local.add(1, {"s": "idle"})
    assert len(calls) == 2
    assert local.sums() == {(("state", "used"),): 0, (("state", "idle"),): 1}
    assert _points(reader, "pool")[1] == [((("state", "idle"),), 1), ((("state", "used"),), 0)]


@fork_only
def test_a_forked_child_starts_from_zero() -> None:
    local = LocalUpDownCounter(MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("m"), "x")
    local.add(5, {"a": "b"})
    assert any(name.startswith("metrics: local sums of x") for name in forks.registered())
    assert in_child(lambda: repr(local.sums())) == "{}"
    assert local.sums() == {(("a", "b"),): 5}


def test_one_counter_per_meter_and_name_as_the_sdk_registers_one_instrument() -> None:
    from otel_crm._internal.local_sums import local_up_down_counter

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("m")
    first = local_up_down_counter(meter, "http.server.active_requests", "{request}")
    second = local_up_down_counter(meter, "http.server.active_requests", "{request}")
    assert first is second  # a second instrument's callback would never be called: its sums lost
    first.add(1, {"k": "v"})
    second.add(1, {"k": "v"})
    assert _points(reader, "http.server.active_requests")[1] == [((("k", "v"),), 2)]


def test_a_transfer_is_the_two_adds_it_replaces() -> None:
    idle, used = {"pool.name": "p", "state": "idle"}, {"pool.name": "p", "state": "used"}
    readers = InMemoryMetricReader(), InMemoryMetricReader()
    adds, moves = (LocalUpDownCounter(MeterProvider(metric_readers=[r]).get_meter("m"), "pool") for r in readers)
    checkout, checkin = moves.transfer(idle, used), moves.transfer(used, idle)
    adds.add(1, idle)
    moves.add(1, idle)
    for _ in range(3):  # two out, one back, as a pool's checkout and checkin events
        adds.add(-1, idle)
        adds.add(1, used)
    for _ in range(3):
        checkout(1)
    adds.add(-1, used)
    adds.add(1, idle)
    checkin(1)
    assert moves.sums() == adds.sums() == {(("pool.name", "p"), ("state", "idle")): -1,
                                          (("pool.name", "p"), ("state", "used")): 2}
    assert [row[0] for row in moves._rows.values()] == [row[0] for row in adds._rows.values()]  # the same order
    assert _points(readers[1], "pool")[1] == _points(readers[0], "pool")[1]


def test_a_transfer_finds_its_rows_again_after_a_fork_reset() -> None:
    counter = LocalUpDownCounter(MeterProvider().get_meter("m"), "pool")
    move = counter.transfer({"state": "idle"}, {"state": "used"})
    move(1)
    counter._reset()  # what a forked child's hook does: the parent's sums are not the child's
    move(2)
    assert counter.sums() == {(("state", "idle"),): -2, (("state", "used"),): 2}


class _SumBroke(Exception):
    pass


def test_a_failure_in_add_is_reported_not_raised(no_reraise: None, caplog) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from otel_crm._internal import safety

    counter = LocalUpDownCounter(MeterProvider().get_meter("t"), "test.broken")

    class Attributes(dict):  # type: ignore[type-arg]
        def items(self):  # type: ignore[no-untyped-def, override]
            raise _SumBroke("boom")

    counter.add(1, Attributes(a=1))  # swallowed: the request goes on
    assert any("internal error in metrics" in r.getMessage() for r in caplog.records)
    safety.reraise_internal_errors(True)
    with pytest.raises(_SumBroke):
        counter.add(1, Attributes(a=1))


class _MoveBroke(Exception):  # its own type: each (component, type) is logged once
    pass


def test_a_failure_in_a_transfer_is_reported_not_raised(no_reraise: None, caplog) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from otel_crm._internal import safety

    class Attributes(dict):  # type: ignore[type-arg]
        def items(self):  # type: ignore[no-untyped-def, override]
            raise _MoveBroke("boom")

    move = LocalUpDownCounter(MeterProvider().get_meter("t"), "test.broken").transfer(Attributes(a=1), None)
    move(1)  # swallowed: the checkout goes on
    assert any("internal error in metrics" in r.getMessage() for r in caplog.records)
    safety.reraise_internal_errors(True)
    with pytest.raises(_MoveBroke):
        move(1)
