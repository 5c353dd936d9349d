"""Our spelled-out names must equal upstream's generated constants."""

from __future__ import annotations

import importlib

import pytest

from otel_crm._internal import semconv

UPSTREAM = {
    "SERVICE_NAME": "opentelemetry.semconv.attributes.service_attributes",
    "SERVICE_VERSION": "opentelemetry.semconv.attributes.service_attributes",
    "SERVICE_NAMESPACE": "opentelemetry.semconv._incubating.attributes.service_attributes",
    "SERVICE_INSTANCE_ID": "opentelemetry.semconv._incubating.attributes.service_attributes",
    "SERVICE_PEER_NAME": "opentelemetry.semconv._incubating.attributes.service_attributes",
    "DEPLOYMENT_ENVIRONMENT_NAME": "opentelemetry.semconv._incubating.attributes.deployment_attributes",
    "TELEMETRY_DISTRO_NAME": "opentelemetry.semconv._incubating.attributes.telemetry_attributes",
    "TELEMETRY_DISTRO_VERSION": "opentelemetry.semconv._incubating.attributes.telemetry_attributes",
    "ERROR_TYPE": "opentelemetry.semconv.attributes.error_attributes",
    "CODE_FUNCTION_NAME": "opentelemetry.semconv.attributes.code_attributes",
    "HTTP_REQUEST_METHOD": "opentelemetry.semconv.attributes.http_attributes",
    "HTTP_RESPONSE_STATUS_CODE": "opentelemetry.semconv.attributes.http_attributes",
    "HTTP_ROUTE": "opentelemetry.semconv.attributes.http_attributes",
    "URL_PATH": "opentelemetry.semconv.attributes.url_attributes",
    "USER_ID": "opentelemetry.semconv._incubating.attributes.user_attributes",
    "DB_SYSTEM_NAME": "opentelemetry.semconv.attributes.db_attributes",
    "DB_OPERATION_NAME": "opentelemetry.semconv.attributes.db_attributes",
    "DB_COLLECTION_NAME": "opentelemetry.semconv.attributes.db_attributes",
    "DB_QUERY_TEXT": "opentelemetry.semconv.attributes.db_attributes",
    "DB_OPERATION_BATCH_SIZE": "opentelemetry.semconv.attributes.db_attributes",
    "SERVER_ADDRESS": "opentelemetry.semconv.attributes.server_attributes",
    "SERVER_PORT": "opentelemetry.semconv.attributes.server_attributes",
    "DB_RESPONSE_RETURNED_ROWS": "opentelemetry.semconv._incubating.attributes.db_attributes",
    "GEN_AI_OPERATION_NAME": "opentelemetry.semconv._incubating.attributes.gen_ai_attributes",
    "GEN_AI_PROVIDER_NAME": "opentelemetry.semconv._incubating.attributes.gen_ai_attributes",
    "GEN_AI_REQUEST_MODEL": "opentelemetry.semconv._incubating.attributes.gen_ai_attributes",
    "GEN_AI_RESPONSE_MODEL": "opentelemetry.semconv._incubating.attributes.gen_ai_attributes",
    "GEN_AI_USAGE_INPUT_TOKENS": "opentelemetry.semconv._incubating.attributes.gen_ai_attributes",
    "GEN_AI_USAGE_OUTPUT_TOKENS": "opentelemetry.semconv._incubating.attributes.gen_ai_attributes",
    "GEN_AI_TOKEN_TYPE": "opentelemetry.semconv._incubating.attributes.gen_ai_attributes",
    "GEN_AI_AGENT_ID": "opentelemetry.semconv._incubating.attributes.gen_ai_attributes",
    "GEN_AI_AGENT_NAME": "opentelemetry.semconv._incubating.attributes.gen_ai_attributes",
    "EXCEPTION_TYPE": "opentelemetry.semconv.attributes.exception_attributes",
    "EXCEPTION_MESSAGE": "opentelemetry.semconv.attributes.exception_attributes",
    "URL_FULL": "opentelemetry.semconv.attributes.url_attributes",
    "DEPLOYMENT_ENVIRONMENT": "opentelemetry.semconv._incubating.attributes.deployment_attributes",
    "NET_PEER_NAME": "opentelemetry.semconv._incubating.attributes.net_attributes",
    "HTTP_HOST": "opentelemetry.semconv._incubating.attributes.http_attributes",
    "HTTP_URL": "opentelemetry.semconv._incubating.attributes.http_attributes",
}

METRICS = {
    "HTTP_SERVER_REQUEST_DURATION": "opentelemetry.semconv.metrics.http_metrics",
    "HTTP_CLIENT_REQUEST_DURATION": "opentelemetry.semconv.metrics.http_metrics",
    "DB_CLIENT_OPERATION_DURATION": "opentelemetry.semconv._incubating.metrics.db_metrics",
    "GEN_AI_CLIENT_OPERATION_DURATION": "opentelemetry.semconv._incubating.metrics.gen_ai_metrics",
    "GEN_AI_CLIENT_TOKEN_USAGE": "opentelemetry.semconv._incubating.metrics.gen_ai_metrics",
}


@pytest.mark.parametrize("name,module", sorted(UPSTREAM.items()))
def test_attribute_names_match_upstream(name: str, module: str) -> None:
    assert getattr(semconv, name) == getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name,module", sorted(METRICS.items()))
def test_metric_names_match_upstream(name: str, module: str) -> None:
    assert getattr(semconv, name) == getattr(importlib.import_module(module), name)


def test_our_names_live_under_crm_and_follow_metric_naming_rules() -> None:
    ours = {k: v for k, v in vars(semconv).items() if k.startswith("CRM_") and isinstance(v, str)}
    assert ours and all(v.startswith("crm.") for v in ours.values())
    assert not any(v.endswith(("_total", ".total", "_seconds", ".seconds", ".ms")) for v in ours.values())


def test_every_crm_attribute_is_documented() -> None:
    attribute_names = {v for k, v in vars(semconv).items()
                       if k.startswith("CRM_") and isinstance(v, str) and k not in _METRIC_CONSTANTS}
    assert attribute_names <= set(semconv.CRM_ATTRIBUTES)


_METRIC_CONSTANTS = {"CRM_REQUESTS", "CRM_REQUEST_ERRORS", "CRM_REQUEST_DURATION", "CRM_WORKFLOW_DURATION",
                     "CRM_WORKFLOW_STEP_DURATION", "CRM_WORKFLOW_EXECUTIONS", "CRM_CONNECTOR_DURATION",
                     "CRM_CONNECTOR_OPERATIONS", "CRM_CONNECTOR_RECORDS_SYNCED", "CRM_GEN_AI_COST",
                     "CRM_SAMPLER_TRACES", "CRM_SAMPLER_SPANS", "CRM_SAMPLER_BUFFER_TRACES",
                     "CRM_DURATION_BUCKETS", "CRM_INTERNAL_ERRORS", "CRM_JOURNEY_ANOMALIES",
                     "CRM_JOURNEY_COMPLETIONS", "CRM_JOURNEY_EFFICIENCY", "CRM_JOURNEY_ELAPSED",
                     "CRM_JOURNEY_MILESTONES", "CRM_JOURNEY_MILESTONE_EVENT", "CRM_JOURNEY_OVER_TARGET",
                     "CRM_JOURNEY_STAGE_DURATION", "CRM_JOURNEY_STARTS", "CRM_JOURNEY_TARGET",
                     "CRM_SAMPLER_BUFFER_SPANS", "CRM_SAMPLER_EVICTIONS", "CRM_SAMPLER_PARTIAL_TRACES",
                     "CRM_TELEMETRY_DROPPED", "CRM_METRIC_OVERFLOW"}


def test_advised_buckets() -> None:
    assert semconv.HTTP_DURATION_BUCKETS[0] == 0.005 and semconv.HTTP_DURATION_BUCKETS[-1] == 10
    assert semconv.DB_CLIENT_OPERATION_DURATION_BUCKETS[0] == 0.001
    assert semconv.GEN_AI_DURATION_BUCKETS[-1] == 81.92
    assert semconv.GEN_AI_TOKEN_BUCKETS[-1] == 67108864


def test_attribute_names_are_spelled_out_only_here() -> None:
    """Upstream and crm.* attribute names live in semconv.py (web.py's Django tracer aside, which
    moves with the integrations); elsewhere they are referred to by constant."""
    import re
    from pathlib import Path

    known = {v for v in vars(semconv).values() if isinstance(v, str) and "." in v}
    package = Path(semconv.__file__).resolve().parents[1]
    literal = re.compile(r"""["']([a-z_]+(?:\.[a-z_]+)+)["']""")
    offenders = {}
    for path in package.rglob("*.py"):
        if path.name in ("semconv.py", "web.py", "testing.py"):  # testing.py: its docstring's example
            continue
        found = sorted(set(literal.findall(path.read_text())) & known)
        if found:
            offenders[str(path.relative_to(package))] = found
    assert offenders == {}
