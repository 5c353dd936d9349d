"""Workflows and their steps: ``execute_workflow {name}`` / ``execute_step {name}`` INTERNAL spans.

Metrics (all with ``crm.workflow.name`` and the guarded ``crm.tenant.id``; never the execution id):

- ``crm.workflow.duration`` (s) and ``crm.workflow.executions`` ({execution}), by
  ``crm.workflow.outcome`` (success|failure) and ``error.type`` on failure;
- ``crm.workflow.step.duration`` (s), by ``crm.workflow.step.name``, outcome and ``error.type``.

A workflow counts the steps started inside it (any depth, in its context) and sets
``crm.workflow.actions`` on its span when it ends.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from otel_crm._internal import semconv
from otel_crm._internal.runtime import Runtime
from otel_crm.helpers._base import Attributes, Instrumented, Operation, PerRuntime, metric_attributes
from otel_crm.helpers._shared import BoundSets, Memo
from otel_crm.helpers._validate import INVALID_ARGUMENT, MAX_COUNT, VALID, Arguments, is_name

__all__ = ["Step", "StepRun", "Workflow", "WorkflowRun", "step", "workflow"]

_current_workflow: ContextVar[WorkflowRun | None] = ContextVar("otel_crm_workflow", default=None)


class _Instruments:
    __slots__ = ("executions", "step_duration", "workflow_duration")

    def __init__(self, runtime: Runtime) -> None:
        meter = runtime.meter()
        self.workflow_duration = meter.create_histogram(
            semconv.CRM_WORKFLOW_DURATION, unit="s", description="Duration of workflow executions.",
            explicit_bucket_boundaries_advisory=list(semconv.CRM_DURATION_BUCKETS))
        self.step_duration = meter.create_histogram(
            semconv.CRM_WORKFLOW_STEP_DURATION, unit="s", description="Duration of workflow steps.",
            explicit_bucket_boundaries_advisory=list(semconv.CRM_DURATION_BUCKETS))
        self.executions = meter.create_counter(
            semconv.CRM_WORKFLOW_EXECUTIONS, unit="{execution}",
            description="Workflow executions, by outcome.")


_instruments: PerRuntime[_Instruments] = PerRuntime("otel_crm.helpers.workflow", _Instruments)


class _Shape:
    """What one (name, trigger) of a workflow always gives: checked once, then memoised."""

    __slots__ = ("attributes", "metric_base", "name", "sets", "span_name", "tail")

    def __init__(self, name: str, trigger: str | None, rejected: tuple[str, ...]) -> None:
        self.name = name
        self.span_name = "execute_workflow " + name
        # The span's start attributes: the name, the execution id of each run, then these
        self.tail: Attributes = {}
        if trigger is not None:
            self.tail[semconv.CRM_WORKFLOW_TRIGGER] = trigger
        if rejected:
            self.tail[INVALID_ARGUMENT] = rejected
        self.attributes: Attributes = {semconv.CRM_WORKFLOW_NAME: name, **self.tail}
        self.metric_base: Attributes = {semconv.CRM_WORKFLOW_NAME: name}
        self.sets = BoundSets()


_shapes: Memo[tuple[Any, Any], _Shape] = Memo(256)


def _shape(name: str, trigger: str | None) -> _Shape:
    """A new shape (memoised when the arguments are valid)."""
    if is_name(name) and (trigger is None or is_name(trigger)):
        return _shapes.put((name, trigger), _Shape(name, trigger, ()))
    arguments = Arguments(WorkflowRun.component, "workflow")  # a misuse: reported on every call
    name = arguments.name("name", name)
    trigger = arguments.optional_name("trigger", trigger)
    return _Shape(name, trigger, arguments.rejected)


class WorkflowRun(Operation):
    """One workflow execution; ``with workflow(...) as run`` gives it (``run.span``)."""

    __slots__ = ("_actions", "_shape", "_var_token")
    component = "helpers.workflow"

    def __init__(self, shape: _Shape, attributes: Attributes) -> None:
        Operation.__init__(self, shape.span_name, SpanKind.INTERNAL, attributes)
        self._shape = shape
        self._actions = 0
        self._var_token: Token[WorkflowRun | None] | None = None

    @property
    def actions(self) -> int:
        """Steps started so far inside this execution."""
        return self._actions

    def _entered(self) -> None:
        self._var_token = _current_workflow.set(self)

    def _exited(self) -> None:
        if self._var_token is not None:
            _current_workflow.reset(self._var_token)
            self._var_token = None

    def _ending(self, span: trace.Span) -> None:
        span.set_attribute(semconv.CRM_WORKFLOW_ACTIONS, self._actions)

    def _record(self, runtime: Runtime, duration: float, error: str | None) -> None:
        instruments = _instruments(runtime)
        shape, tenant = self._shape, self._tenant_id
        if error is None:  # the usual case: sets bound once (see BoundSets)
            attributes = shape.sets.get(runtime, _DURATION, _DURATION if tenant is None else (_DURATION, tenant),
                                        shape.metric_base, tenant, outcome_key=_OUTCOME)
        else:
            attributes = metric_attributes(runtime, _DURATION, shape.metric_base, tenant,
                                           error=error, outcome_key=_OUTCOME)
        instruments.workflow_duration.record(duration, attributes, self._context)
        if tenant is not None:  # each metric has its own tenant budget
            if error is None:
                attributes = shape.sets.get(runtime, _EXECUTIONS, (_EXECUTIONS, tenant), shape.metric_base,
                                            tenant, outcome_key=_OUTCOME)
            else:
                attributes = metric_attributes(runtime, _EXECUTIONS, shape.metric_base, tenant,
                                               error=error, outcome_key=_OUTCOME)
        instruments.executions.add(1, attributes, self._context)


_DURATION = semconv.CRM_WORKFLOW_DURATION
_EXECUTIONS = semconv.CRM_WORKFLOW_EXECUTIONS
_OUTCOME = semconv.CRM_WORKFLOW_OUTCOME


class StepRun(Operation):
    """One step execution; counted as an action of the enclosing workflow run, if any."""

    __slots__ = ("_step", "_workflow")
    component = "helpers.workflow"

    def __init__(self, name: str, attributes: Attributes) -> None:
        # Built when the step starts (see Instrumented._new): the enclosing workflow is the current one.
        workflow = self._workflow = _current_workflow.get()
        if workflow is not None:
            workflow._actions += 1
            attributes = dict(attributes)
            attributes[semconv.CRM_WORKFLOW_NAME] = workflow._shape.name
        Operation.__init__(self, "execute_step " + name, SpanKind.INTERNAL, attributes)
        self._step = name

    def _record(self, runtime: Runtime, duration: float, error: str | None) -> None:
        base: Attributes = {semconv.CRM_WORKFLOW_STEP_NAME: self._step}
        if self._workflow is not None:
            base[semconv.CRM_WORKFLOW_NAME] = self._workflow._shape.name
        _instruments(runtime).step_duration.record(duration, metric_attributes(
            runtime, semconv.CRM_WORKFLOW_STEP_DURATION, base, self._tenant_id,
            error=error, outcome_key=semconv.CRM_WORKFLOW_OUTCOME), self._context)


class Workflow(Instrumented[WorkflowRun]):
    """Returned by :func:`workflow`."""

    __slots__ = ("_attributes", "_shape")

    def __init__(self, shape: _Shape, execution_id: object) -> None:
        self._shape = shape
        if execution_id is None:
            self._attributes = shape.attributes
        else:  # any id is fine: span-only, never a metric label
            self._attributes = {semconv.CRM_WORKFLOW_NAME: shape.name, semconv.CRM_WORKFLOW_EXECUTION_ID: (
                execution_id if type(execution_id) is str else str(execution_id)), **shape.tail}

    def _operation(self, args: tuple[Any, ...] | None, code_function: str | None) -> WorkflowRun:
        attributes = self._attributes if code_function is None else self._with_function(self._attributes,
                                                                                        code_function)
        return WorkflowRun(self._shape, attributes)


class Step(Instrumented[StepRun]):
    """Returned by :func:`step`."""

    __slots__ = ("_attributes", "_name")

    def __init__(self, name: str, index: int | None) -> None:
        arguments = VALID
        if not (is_name(name) and (index is None or (type(index) is int and 0 <= index <= MAX_COUNT))):
            arguments = Arguments(StepRun.component, "step")
            name = arguments.name("name", name)
            index = arguments.optional_count("index", index)
        self._name = name
        attributes: Attributes = {semconv.CRM_WORKFLOW_STEP_NAME: name}
        if index is not None:
            attributes[semconv.CRM_WORKFLOW_STEP_INDEX] = index
        self._attributes = arguments.note(attributes)

    def _operation(self, args: tuple[Any, ...] | None, code_function: str | None) -> StepRun:
        attributes = self._with_function(self._attributes, code_function)
        return StepRun(self._name, attributes)


def workflow(name: str, *, execution_id: str | None = None, trigger: str | None = None) -> Workflow:
    """Trace one run of a business workflow (lead enrichment, campaign send, nightly sync…).

    ``with workflow("enrich_lead", execution_id=run_id, trigger="webhook"):`` — or ``async with``,
    or ``@workflow("enrich_lead")`` on a sync or async function. ``execution_id`` goes on the span
    only, never on metrics (unbounded cardinality).
    """
    try:
        shape = _shapes.get((name, trigger))
    except Exception:  # an unhashable argument: checked (and refused) below
        shape = None
    return Workflow(shape if shape is not None else _shape(name, trigger), execution_id)


def step(name: str, *, index: int | None = None) -> Step:
    """Trace one step of the enclosing workflow; same forms as :func:`workflow`."""
    return Step(name, index)
