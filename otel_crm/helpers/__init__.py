"""Business helpers: workflows, connector operations, LLM/agent calls and search queries.

Each is a sync/async context manager and a sync/async decorator, records spans and metrics named
per the OpenTelemetry conventions (ours under ``crm.``), and never lets an instrumentation failure
reach business code. See ``docs/helpers.md``.
"""

from otel_crm.helpers.agent import AgentInvocation, AgentInvocationRun, agent_invocation
from otel_crm.helpers.connector import (
    ConnectorOperation,
    ConnectorOperationRun,
    connector_operation,
    instrument_connector_operation,
    instrument_sync_operation,
)
from otel_crm.helpers.pricing import ModelPrice, PriceTable, load_price_table
from otel_crm.helpers.search import SearchQuery, SearchQueryRun, sanitize_query, search_query
from otel_crm.helpers.workflow import Step, StepRun, Workflow, WorkflowRun, step, workflow

__all__ = [
    "AgentInvocation",
    "AgentInvocationRun",
    "ConnectorOperation",
    "ConnectorOperationRun",
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
    "load_price_table",
    "sanitize_query",
    "search_query",
    "step",
    "workflow",
]
