"""The helpers' bounded memos: shapes checked once per distinct value, metric attribute sets bound once.

Each memo is filled past its budget (it never grows beyond it), and the sets the guard would record
differently are never served from memory (an overflow is counted on every measurement, a forked
child's fresh budgets are used).
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

import otel_crm
from otel_crm._internal import semconv
from otel_crm._internal.cardinality import OTHER, CardinalityGuard
from otel_crm._internal.runtime import Runtime
from otel_crm._internal.settings import resolve_settings
from otel_crm.helpers._base import Operation
from otel_crm.helpers._shared import BOUND_SETS_LIMIT, BoundSets
from otel_crm.testing import CapturedTelemetry

WORKFLOW = semconv.CRM_WORKFLOW_NAME


def _runtime(guard: CardinalityGuard | None) -> Runtime:
    return Runtime(settings=resolve_settings({}), cardinality=guard)


def test_bound_sets_serve_one_set_per_key_and_never_grow_past_their_budget() -> None:
    sets = BoundSets()
    runtime = _runtime(CardinalityGuard({WORKFLOW: 10 * BOUND_SETS_LIMIT}))
    first = sets.get(runtime, "m", "m", {WORKFLOW: "w"}, None, outcome_key="outcome")
    assert first == {WORKFLOW: "w", "outcome": "success"}
    assert sets.get(runtime, "m", "m", {WORKFLOW: "w"}, None, outcome_key="outcome") is first
    for i in range(3 * BOUND_SETS_LIMIT):
        assert sets.get(runtime, "m", ("m", i), {WORKFLOW: f"w{i}"}, f"t{i}") == {
            WORKFLOW: f"w{i}", semconv.CRM_TENANT_ID: f"t{i}"}
        assert len(sets) <= BOUND_SETS_LIMIT


def test_a_set_with_an_overflow_is_bound_again_on_every_measurement() -> None:
    overflows: list[tuple[str, str]] = []
    runtime = _runtime(CardinalityGuard({WORKFLOW: 1}, on_overflow=lambda m, a: overflows.append((m, a))))
    sets = BoundSets()
    assert sets.get(runtime, "m", "a", {WORKFLOW: "a"}, None) == {WORKFLOW: "a"}
    for _ in range(3):
        assert sets.get(runtime, "m", "b", {WORKFLOW: "b"}, None) == {WORKFLOW: OTHER}
    assert overflows == [("m", WORKFLOW)] * 3
    assert len(sets) == 1  # only the admitted set is kept


def test_variants_bind_once_for_all_of_them_and_add_the_extras_after_the_guard() -> None:
    overflows: list[str] = []
    guard = CardinalityGuard({WORKFLOW: 1, "type": 1}, on_overflow=lambda m, a: overflows.append(a))
    runtime, sets = _runtime(guard), BoundSets()
    extras = ({"type": "input"}, {"type": "output"})  # never bound: "output" would overflow "type"
    inputs, outputs = sets.variants(runtime, "m", "k", {WORKFLOW: "w"}, None, extras=extras)
    assert (inputs, outputs) == ({WORKFLOW: "w", "type": "input"}, {WORKFLOW: "w", "type": "output"})
    assert sets.variants(runtime, "m", "k", {WORKFLOW: "w"}, None, extras=extras)[0] is inputs
    assert sets.variants(runtime, "m", "x", {WORKFLOW: "x"}, None, extras=extras) == (
        {WORKFLOW: OTHER, "type": "input"}, {WORKFLOW: OTHER, "type": "output"})
    assert overflows == [WORKFLOW]  # one binding for the two measurements, as before the memo


def test_a_forked_child_binds_again_with_its_fresh_budgets() -> None:
    guard = CardinalityGuard({WORKFLOW: 1})
    runtime, sets = _runtime(guard), BoundSets()
    assert sets.get(runtime, "m", "a", {WORKFLOW: "a"}, None) == {WORKFLOW: "a"}
    guard.after_fork()  # the child: "a" was never recorded here
    assert sets.get(runtime, "m", "b", {WORKFLOW: "b"}, None) == {WORKFLOW: "b"}
    assert sets.get(runtime, "m", "a", {WORKFLOW: "a"}, None) == {WORKFLOW: OTHER}


def test_another_runtime_gets_its_own_sets() -> None:
    sets = BoundSets()
    assert sets.get(_runtime(None), "m", "k", {WORKFLOW: "w"}, None) == {WORKFLOW: "w"}
    assert sets.get(_runtime(CardinalityGuard({WORKFLOW: 0})), "m", "k", {WORKFLOW: "w"}, None) == {
        WORKFLOW: OTHER}


@pytest.mark.parametrize(("module", "call"), [
    ("otel_crm.helpers.workflow", lambda i: otel_crm.workflow(f"w{i}")),
    ("otel_crm.helpers.connector", lambda i: otel_crm.connector_operation(f"c{i}", "sync")),
    ("otel_crm.helpers.agent", lambda i: otel_crm.agent_invocation("openai", f"m{i}")),
    ("otel_crm.helpers.search", lambda i: otel_crm.search_query(f"index{i}")),
])
def test_helper_shapes_are_memoised_within_a_budget(module: str, call: Any, telemetry: CapturedTelemetry) -> None:
    shapes = importlib.import_module(module)._shapes
    for i in range(3 * shapes.limit):
        with call(i):
            pass
        assert len(shapes) <= shapes.limit
    assert len(telemetry.spans()) == 3 * shapes.limit


def test_the_lifecycle_calls_only_the_hooks_a_helper_overrides() -> None:
    class Plain(Operation):
        pass

    class Tracked(Operation):
        def _exited(self) -> None:
            pass

    assert (Plain._has_entered, Plain._has_started, Plain._has_ending) == (False, False, False)
    assert Tracked._has_entered
