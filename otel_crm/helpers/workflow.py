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

from otel_crm._internal import semconv
from otel_crm._internal.runtime import Runtime
from otel_crm.helpers._base import Attributes, Instrumented, Operation, PerRuntime, metric_attributes
from otel_crm.helpers._validate import MAX_COUNT, VALID, Arguments, is_name

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


class WorkflowRun(Operation):
    """One workflow execution; ``with workflow(...) as run`` gives it (``run.span``)."""

    __slots__ = ("_actions", "_attributes", "_metric_base", "_name", "_var_token")
    component = "helpers.workflow"

    def __init__(self, name: str, attributes: Attributes, metric_base: Attributes) -> None:
        super().__init__()
        self._name = name
        self._attributes = attributes
        self._metric_base = metric_base
        self._actions = 0
        self._var_token: Token[WorkflowRun | None] | None = None

    @property
    def actions(self) -> int:
        """Steps started so far inside this execution."""
        return self._actions

    def _span_name(self) -> str:
        return "execute_workflow " + self._name

    def _start_attributes(self) -> Attributes:
        return self._attributes

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
        base, tenant = self._metric_base, self._tenant_id
        attributes = metric_attributes(runtime, semconv.CRM_WORKFLOW_DURATION, base, tenant,
                                       error=error, outcome_key=semconv.CRM_WORKFLOW_OUTCOME)
        instruments.workflow_duration.record(duration, attributes)
        if tenant is not None:  # each metric has its own tenant budget
            attributes = metric_attributes(runtime, semconv.CRM_WORKFLOW_EXECUTIONS, base, tenant,
                                           error=error, outcome_key=semconv.CRM_WORKFLOW_OUTCOME)
        instruments.executions.add(1, attributes)


class StepRun(Operation):
    """One step execution; counted as an action of the enclosing workflow run, if any."""

    __slots__ = ("_attributes", "_name", "_workflow")
    component = "helpers.workflow"

    def __init__(self, name: str, attributes: Attributes) -> None:
        super().__init__()
        self._name = name
        self._attributes = attributes
        self._workflow: WorkflowRun | None = None

    def _span_name(self) -> str:
        return "execute_step " + self._name

    def _start_attributes(self) -> Attributes:
        workflow = self._workflow = _current_workflow.get()
        if workflow is None:
            return self._attributes
        workflow._actions += 1
        attributes = dict(self._attributes)
        attributes[semconv.CRM_WORKFLOW_NAME] = workflow._name
        return attributes

    def _record(self, runtime: Runtime, duration: float, error: str | None) -> None:
        base: Attributes = {semconv.CRM_WORKFLOW_STEP_NAME: self._name}
        if self._workflow is not None:
            base[semconv.CRM_WORKFLOW_NAME] = self._workflow._name
        _instruments(runtime).step_duration.record(duration, metric_attributes(
            runtime, semconv.CRM_WORKFLOW_STEP_DURATION, base, self._tenant_id,
            error=error, outcome_key=semconv.CRM_WORKFLOW_OUTCOME))


class Workflow(Instrumented[WorkflowRun]):
    """Returned by :func:`workflow`."""

    __slots__ = ("_attributes", "_metric_base", "_name")

    def __init__(self, name: str, execution_id: str | None, trigger: str | None) -> None:
        super().__init__()
        arguments = VALID
        if not (is_name(name) and (trigger is None or is_name(trigger))):
            arguments = Arguments(WorkflowRun.component, "workflow")
            name = arguments.name("name", name)
            trigger = arguments.optional_name("trigger", trigger)
        self._name = name
        attributes: Attributes = {semconv.CRM_WORKFLOW_NAME: name}
        if execution_id is not None:  # any id is fine: span-only, never a metric label
            attributes[semconv.CRM_WORKFLOW_EXECUTION_ID] = str(execution_id)
        if trigger is not None:
            attributes[semconv.CRM_WORKFLOW_TRIGGER] = trigger
        self._attributes = arguments.note(attributes)
        self._metric_base: Attributes = {semconv.CRM_WORKFLOW_NAME: name}

    def _operation(self, args: tuple[Any, ...] | None, code_function: str | None) -> WorkflowRun:
        attributes = self._with_function(self._attributes, code_function)
        return WorkflowRun(self._name, attributes, self._metric_base)


class Step(Instrumented[StepRun]):
    """Returned by :func:`step`."""

    __slots__ = ("_attributes", "_name")

    def __init__(self, name: str, index: int | None) -> None:
        super().__init__()
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
    return Workflow(name, execution_id, trigger)


def step(name: str, *, index: int | None = None) -> Step:
    """Trace one step of the enclosing workflow; same forms as :func:`workflow`."""
    return Step(name, index)
