"""Every attribute and metric name otel_crm uses, in one place.

Upstream names are spelled out as plain strings (importing the generated semconv modules costs
startup time); `tests/unit/test_semconv.py` checks each against `opentelemetry.semconv`.
Our own names live under `crm.` and are documented in the README's attribute table.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CRM_ATTRIBUTES",
    "DB_CLIENT_OPERATION_DURATION_BUCKETS",
    "GEN_AI_DURATION_BUCKETS",
    "GEN_AI_TOKEN_BUCKETS",
    "HTTP_DURATION_BUCKETS",
]

# --- upstream: resource ---------------------------------------------------------------------------
SERVICE_NAME: Final = "service.name"
SERVICE_VERSION: Final = "service.version"
SERVICE_NAMESPACE: Final = "service.namespace"
SERVICE_INSTANCE_ID: Final = "service.instance.id"
DEPLOYMENT_ENVIRONMENT_NAME: Final = "deployment.environment.name"
TELEMETRY_DISTRO_NAME: Final = "telemetry.distro.name"
TELEMETRY_DISTRO_VERSION: Final = "telemetry.distro.version"
TELEMETRY_SDK_NAME: Final = "telemetry.sdk.name"
TELEMETRY_SDK_LANGUAGE: Final = "telemetry.sdk.language"
TELEMETRY_SDK_VERSION: Final = "telemetry.sdk.version"
HOST_NAME: Final = "host.name"
HOST_ARCH: Final = "host.arch"
OS_TYPE: Final = "os.type"
PROCESS_PID: Final = "process.pid"
PROCESS_RUNTIME_NAME: Final = "process.runtime.name"
PROCESS_RUNTIME_VERSION: Final = "process.runtime.version"
PROCESS_EXECUTABLE_NAME: Final = "process.executable.name"

# --- upstream: spans --------------------------------------------------------------------------------
ERROR_TYPE: Final = "error.type"
CODE_FUNCTION_NAME: Final = "code.function.name"
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
HTTP_ROUTE: Final = "http.route"
URL_PATH: Final = "url.path"
URL_FULL: Final = "url.full"
URL_QUERY: Final = "url.query"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
SERVICE_PEER_NAME: Final = "service.peer.name"
USER_ID: Final = "user.id"
DB_SYSTEM_NAME: Final = "db.system.name"
DB_OPERATION_NAME: Final = "db.operation.name"
DB_COLLECTION_NAME: Final = "db.collection.name"
DB_QUERY_TEXT: Final = "db.query.text"
DB_OPERATION_BATCH_SIZE: Final = "db.operation.batch.size"
DB_RESPONSE_RETURNED_ROWS: Final = "db.response.returned_rows"
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
GEN_AI_AGENT_ID: Final = "gen_ai.agent.id"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"

# --- upstream: deprecated names older instrumentations still set (read only, never written) ---------
DEPLOYMENT_ENVIRONMENT: Final = "deployment.environment"
NET_PEER_NAME: Final = "net.peer.name"
HTTP_HOST: Final = "http.host"
HTTP_URL: Final = "http.url"

# --- upstream: metrics ------------------------------------------------------------------------------
HTTP_SERVER_REQUEST_DURATION: Final = "http.server.request.duration"
HTTP_CLIENT_REQUEST_DURATION: Final = "http.client.request.duration"
DB_CLIENT_OPERATION_DURATION: Final = "db.client.operation.duration"
GEN_AI_CLIENT_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
GEN_AI_CLIENT_TOKEN_USAGE: Final = "gen_ai.client.token.usage"

# Bucket boundaries advised by the conventions (seconds; tokens for token usage).
HTTP_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                                7.5, 10.0)
DB_CLIENT_OPERATION_DURATION_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
GEN_AI_DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                                  20.48, 40.96, 81.92)
GEN_AI_TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                               16777216, 67108864)
# Our own durations (workflows, connector syncs, whole requests) span ms to minutes.
CRM_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0,
                               30.0, 60.0, 120.0, 300.0)
# Journeys take seconds (a demo) to days (a trial). Bounds sit on the usual cumulative targets
# (5, 15, 30, 60 min) and on the alert thresholds (75, 120, 180 min) so "share within target" and
# "median above a threshold" are exact on the histogram, not interpolated.
CRM_JOURNEY_BUCKETS: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 2700.0,
                              3600.0, 4500.0, 5400.0, 7200.0, 10800.0, 14400.0, 21600.0, 43200.0,
                              86400.0, 172800.0, 604800.0)
CRM_JOURNEY_EFFICIENCY_BUCKETS: Final = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)

# --- ours: attributes (crm.*) -----------------------------------------------------------------------
CRM_TENANT_ID: Final = "crm.tenant.id"
CRM_TENANT_TIER: Final = "crm.tenant.tier"
CRM_OPERATION_NAME: Final = "crm.operation.name"
CRM_SAMPLING_REASON: Final = "crm.sampling.reason"
CRM_SAMPLING_WEIGHT: Final = "crm.sampling.weight"
CRM_SAMPLING_DECISION: Final = "crm.sampling.decision"
CRM_SAMPLING_RULE: Final = "crm.sampling.rule"
CRM_SAMPLING_PARTIAL: Final = "crm.sampling.partial"
CRM_TRACE_SAMPLED: Final = "crm.trace.sampled"
CRM_WORKFLOW_NAME: Final = "crm.workflow.name"
CRM_WORKFLOW_EXECUTION_ID: Final = "crm.workflow.execution_id"
CRM_WORKFLOW_TRIGGER: Final = "crm.workflow.trigger"
CRM_WORKFLOW_OUTCOME: Final = "crm.workflow.outcome"
CRM_WORKFLOW_ACTIONS: Final = "crm.workflow.actions"
CRM_WORKFLOW_STEP_NAME: Final = "crm.workflow.step.name"
CRM_WORKFLOW_STEP_INDEX: Final = "crm.workflow.step.index"
CRM_CONNECTOR_OPERATION: Final = "crm.connector.operation"
CRM_CONNECTOR_RESOURCE_TYPE: Final = "crm.connector.resource_type"
CRM_CONNECTOR_RECORDS: Final = "crm.connector.records"
CRM_CONNECTOR_OUTCOME: Final = "crm.connector.outcome"
CRM_GEN_AI_COST_AMOUNT: Final = "crm.gen_ai.cost.amount"
CRM_GEN_AI_COST_CURRENCY: Final = "crm.gen_ai.cost.currency"
CRM_SIGNAL: Final = "crm.signal"
CRM_DROP_REASON: Final = "crm.drop.reason"
CRM_COMPONENT: Final = "crm.component"
CRM_METRIC_NAME: Final = "crm.metric.name"
CRM_JOURNEY_NAME: Final = "crm.journey.name"
CRM_JOURNEY_MILESTONE_NAME: Final = "crm.journey.milestone.name"
CRM_JOURNEY_MILESTONE_INDEX: Final = "crm.journey.milestone.index"
CRM_JOURNEY_MILESTONE_ELAPSED: Final = "crm.journey.milestone.elapsed"
CRM_JOURNEY_MILESTONE_STAGE_DURATION: Final = "crm.journey.milestone.stage_duration"
CRM_JOURNEY_MILESTONE_TARGET: Final = "crm.journey.milestone.target"
CRM_JOURNEY_MILESTONE_OVER_TARGET: Final = "crm.journey.milestone.over_target"
CRM_JOURNEY_MILESTONE_FLAGS: Final = "crm.journey.milestone.flags"
CRM_JOURNEY_COMPLETED: Final = "crm.journey.completed"
CRM_JOURNEY_SUBJECT_ID: Final = "crm.journey.subject.id"
CRM_JOURNEY_ANOMALY: Final = "crm.journey.anomaly"

# --- ours: W3C baggage keys (the tenant, carried only to allow-listed hosts) ------------------------
BAGGAGE_TENANT_ID: Final = "crm.tenant.id"
BAGGAGE_TENANT_TIER: Final = "crm.tenant.tier"
BAGGAGE_USER_ID: Final = "crm.user.id"

# --- ours: metrics ----------------------------------------------------------------------------------
# RED metrics from 100% of local-root (entry) spans, recorded before any sampling decision.
CRM_REQUESTS: Final = "crm.requests"
CRM_REQUEST_ERRORS: Final = "crm.request.errors"
CRM_REQUEST_DURATION: Final = "crm.request.duration"
# Business helpers.
CRM_WORKFLOW_DURATION: Final = "crm.workflow.duration"
CRM_WORKFLOW_STEP_DURATION: Final = "crm.workflow.step.duration"
CRM_WORKFLOW_EXECUTIONS: Final = "crm.workflow.executions"
CRM_CONNECTOR_DURATION: Final = "crm.connector.duration"
CRM_CONNECTOR_OPERATIONS: Final = "crm.connector.operations"
CRM_CONNECTOR_RECORDS_SYNCED: Final = "crm.connector.records.synced"
CRM_GEN_AI_COST: Final = "crm.gen_ai.cost"
CRM_JOURNEY_ELAPSED: Final = "crm.journey.elapsed"
CRM_JOURNEY_STAGE_DURATION: Final = "crm.journey.stage.duration"
CRM_JOURNEY_MILESTONES: Final = "crm.journey.milestones"
CRM_JOURNEY_STARTS: Final = "crm.journey.starts"
CRM_JOURNEY_COMPLETIONS: Final = "crm.journey.completions"
CRM_JOURNEY_OVER_TARGET: Final = "crm.journey.over_target"
CRM_JOURNEY_EFFICIENCY: Final = "crm.journey.efficiency"
CRM_JOURNEY_ANOMALIES: Final = "crm.journey.anomalies"
CRM_JOURNEY_TARGET: Final = "crm.journey.target"
# The log record (event) of each milestone.
CRM_JOURNEY_MILESTONE_EVENT: Final = "crm.journey.milestone"
# Tail sampler self-metrics.
CRM_SAMPLER_TRACES: Final = "crm.sampler.traces"
CRM_SAMPLER_SPANS: Final = "crm.sampler.spans"
CRM_SAMPLER_BUFFER_TRACES: Final = "crm.sampler.buffer.traces"
CRM_SAMPLER_BUFFER_SPANS: Final = "crm.sampler.buffer.spans"
CRM_SAMPLER_EVICTIONS: Final = "crm.sampler.evictions"
CRM_SAMPLER_PARTIAL_TRACES: Final = "crm.sampler.partial_traces"
# Health of otel_crm itself.
CRM_TELEMETRY_DROPPED: Final = "crm.telemetry.dropped"
CRM_INTERNAL_ERRORS: Final = "crm.internal.errors"
CRM_METRIC_OVERFLOW: Final = "crm.metric.overflow"

# The README's table of our attributes is generated from this: name -> (where, meaning).
CRM_ATTRIBUTES: Final[dict[str, tuple[str, str]]] = {
    CRM_TENANT_ID: ("resource, spans, logs, metrics", "Tenant the work is done for (metrics: cardinality-guarded)."),
    CRM_TENANT_TIER: ("resource, spans", "Tenant's plan or tier."),
    CRM_OPERATION_NAME: ("RED metrics", "Entry span's operation: `{method} {route}`, `{method}` for an unrouted "
                                        "request (never its path), or the job's span name (scrubbed, budgeted)."),
    CRM_SAMPLING_REASON: ("kept spans", "Why the tail sampler kept the trace: error, slow, ratio or all."),
    CRM_SAMPLING_WEIGHT: ("kept spans", "How many traces this one stands for (1/ratio for a ratio keep)."),
    CRM_SAMPLING_DECISION: ("crm.sampler.spans", "kept or dropped."),
    CRM_SAMPLING_RULE: ("kept spans (head mode: the entry span)",
                        "Name of the sampling rule that matched the trace (absent: no rule matched)."),
    CRM_SAMPLING_PARTIAL: ("kept spans", "true: the rest of a trace dropped early, kept for a later error or "
                                         "slow root (spans ended before the early decision are gone)."),
    CRM_TRACE_SAMPLED: ("log records", "The final sampling decision of the record's trace (true: kept); absent "
                                       "while undecided (tail mode: until the request's local root ended)."),
    CRM_WORKFLOW_NAME: ("workflow spans, metrics", "Workflow name."),
    CRM_WORKFLOW_EXECUTION_ID: ("workflow spans only", "One run's id (never on metrics)."),
    CRM_WORKFLOW_TRIGGER: ("workflow spans", "What started the run (api, schedule, webhook…)."),
    CRM_WORKFLOW_OUTCOME: ("workflow metrics", "success or failure."),
    CRM_WORKFLOW_ACTIONS: ("workflow spans", "Actions (steps) executed in the run."),
    CRM_WORKFLOW_STEP_NAME: ("step spans, metrics", "Step name."),
    CRM_WORKFLOW_STEP_INDEX: ("step spans", "Step position in the workflow."),
    CRM_CONNECTOR_OPERATION: ("connector spans, metrics", "Connector operation (sync, push, fetch…)."),
    CRM_CONNECTOR_RESOURCE_TYPE: ("connector spans, metrics", "Synced resource (contacts, posts…)."),
    CRM_CONNECTOR_RECORDS: ("connector spans", "Records handled by the operation."),
    CRM_CONNECTOR_OUTCOME: ("connector metrics", "success or failure."),
    CRM_GEN_AI_COST_AMOUNT: ("GenAI spans", "Cost of the call from the price table."),
    CRM_GEN_AI_COST_CURRENCY: ("GenAI spans, cost metric", "Currency of the cost (USD by default)."),
    CRM_SIGNAL: ("crm.telemetry.dropped", "traces, metrics or logs."),
    CRM_DROP_REASON: ("crm.telemetry.dropped", "Why telemetry was dropped: queue_full, export_failed, "
                                               "export_error, scrub_error, shutdown."),
    CRM_COMPONENT: ("crm.internal.errors", "Which part of otel_crm failed."),
    CRM_METRIC_NAME: ("crm.metric.overflow", "Metric whose attribute value overflowed to __other__."),
    CRM_JOURNEY_NAME: ("journey events, spans, metrics", "Declared business journey (onboarding…)."),
    CRM_JOURNEY_MILESTONE_NAME: ("journey events, spans, metrics", "Milestone of the journey reached."),
    CRM_JOURNEY_MILESTONE_INDEX: ("journey events, spans", "Milestone position (0: the start)."),
    CRM_JOURNEY_MILESTONE_ELAPSED: ("journey events, spans", "Seconds from the journey's start."),
    CRM_JOURNEY_MILESTONE_STAGE_DURATION: ("journey events, spans",
                                           "Seconds from the previous milestone (when known)."),
    CRM_JOURNEY_MILESTONE_TARGET: ("journey events, spans", "Cumulative target of the milestone (s)."),
    CRM_JOURNEY_MILESTONE_OVER_TARGET: ("journey events, spans", "Reached later than its target."),
    CRM_JOURNEY_MILESTONE_FLAGS: ("journey events, spans", "Anomalies of the input (out_of_order…)."),
    CRM_JOURNEY_COMPLETED: ("journey events, spans", "True at the journey's last milestone."),
    CRM_JOURNEY_SUBJECT_ID: ("journey events, spans",
                             "Who travels the journey; hashed unless user-id capture is on."),
    CRM_JOURNEY_ANOMALY: ("crm.journey.anomalies", "Which input anomaly was seen."),
}

# --- appended: helper argument validation ---------------------------------------------------------
CRM_HELPER_INVALID_ARGUMENT: Final = "crm.helper.invalid_argument"
CRM_ATTRIBUTES[CRM_HELPER_INVALID_ARGUMENT] = (
    "helper spans", "Misused helper arguments (`set_records.count`, `step.index`…), ignored and counted "
    "in `crm.internal.errors`; never the value.")

# --- appended: what otel_crm/_internal/corrections.py writes --------------------------------------
DB_NAMESPACE: Final = "db.namespace"
DB_QUERY_SUMMARY: Final = "db.query.summary"
DB_STORED_PROCEDURE_NAME: Final = "db.stored_procedure.name"
DB_CLIENT_CONNECTION_STATE: Final = "db.client.connection.state"
DB_CLIENT_CONNECTION_POOL_NAME: Final = "db.client.connection.pool.name"
DB_CLIENT_CONNECTION_COUNT: Final = "db.client.connection.count"

# --- appended: the cardinality guard (cardinality.py) ----------------------------------------------
CRM_METRIC_ATTRIBUTE: Final = "crm.metric.attribute"
CRM_ATTRIBUTES[CRM_METRIC_ATTRIBUTE] = ("crm.metric.overflow", "Attribute whose value overflowed to __other__.")
# Metric attributes that can carry request-derived values, by budget (`<group>_metric_limit`).
GUARDED_METRIC_ATTRIBUTES: Final[dict[str, tuple[str, ...]]] = {
    "operation": (CRM_OPERATION_NAME, HTTP_ROUTE, ERROR_TYPE, CRM_CONNECTOR_OPERATION, GEN_AI_OPERATION_NAME),
    "connector": (SERVICE_PEER_NAME, CRM_CONNECTOR_RESOURCE_TYPE),
    "workflow": (CRM_WORKFLOW_NAME, CRM_WORKFLOW_STEP_NAME),
    "model": (GEN_AI_REQUEST_MODEL, GEN_AI_RESPONSE_MODEL, GEN_AI_PROVIDER_NAME),
    "index": (DB_COLLECTION_NAME,),
    "tenant": (CRM_TENANT_ID,),
}
