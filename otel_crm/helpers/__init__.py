"""Business helpers: workflows, connector operations, LLM/agent calls, search queries and journeys.

Each is a sync/async context manager and a sync/async decorator, records spans and metrics named
per the OpenTelemetry conventions (ours under ``crm.``), and never lets an instrumentation failure
reach business code. See ``docs/helpers.md``.
"""

from otel_crm._internal.journeys import Journey, Milestone, load_journeys
from otel_crm.helpers.agent import AgentInvocation, AgentInvocationRun, agent_invocation
from otel_crm.helpers.connector import (
    ConnectorOperation,
    ConnectorOperationRun,
    connector_operation,
    instrument_connector_operation,
    instrument_sync_operation,
)
from otel_crm.helpers.journey import MilestoneRecord, journey_milestone
from otel_crm.helpers.pricing import ModelPrice, PriceTable, load_price_table
from otel_crm.helpers.search import SearchQuery, SearchQueryRun, sanitize_query, search_query
from otel_crm.helpers.workflow import Step, StepRun, Workflow, WorkflowRun, step, workflow

__all__ = [
    "AgentInvocation",
    "AgentInvocationRun",
    "ConnectorOperation",
    "ConnectorOperationRun",
    "Journey",
    "Milestone",
    "MilestoneRecord",
    "ModelPrice",
    "PriceTable",
    "SearchQuery",
    "SearchQueryRun",
    "Step",
    "StepRun",
    "Workflow",
    "WorkflowRun",
    "agent_invocation",
    "connector_operation",
    "instrument_connector_operation",
    "instrument_sync_operation",
    "journey_milestone",
    "load_journeys",
    "load_price_table",
    "sanitize_query",
    "search_query",
    "step",
    "workflow",
]
