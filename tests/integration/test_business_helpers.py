"""The Flask example's workflow, connector sync, agent call and search, through the real collector."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.conftest import Collector, flask_app, instrumented_env, wait_until

pytestmark = pytest.mark.integration
INTERNAL, CLIENT = 1, 3


def test_business_spans_and_metrics_reach_the_collector(collector: Collector, tmp_path: Path) -> None:
    app = flask_app(tmp_path, instrumented_env(collector, "helpers-crm", OTEL_CRM_SAMPLING_MODE="off"))
    headers = {"X-Tenant-ID": "acme"}
    lead = requests.post(app.url("/leads"), json={"name": "Ada", "email": "ada@example.com",
                                                  "company": "Acme"}, headers=headers, timeout=10).json()
    assert requests.post(app.url(f"/leads/{lead['id']}/qualify"), headers=headers, timeout=10).status_code == 200
    assert requests.post(app.url("/sync/hubspot"), headers=headers, timeout=10).json() == {"synced": 25}
    assert len(requests.get(app.url("/leads/search?q=Acme"), headers=headers, timeout=10).json()["hits"]) == 3
    app.process.stop()

    wait_until(lambda: any(s.name == "search leads" for s in collector.spans()), 20, "the last request's spans")
    spans = collector.spans()
    by_name = {s.name: s for s in spans}

    workflow = by_name["execute_workflow qualify_lead"]
    assert workflow.kind == INTERNAL
    assert workflow.attributes["crm.workflow.name"] == "qualify_lead"
    assert workflow.attributes["crm.workflow.trigger"] == "api"
    assert workflow.attributes["crm.workflow.actions"] == 3
    assert workflow.attributes["crm.tenant.id"] == "acme"
    steps = [s for s in spans if s.name.startswith("execute_step ")]
    assert sorted(s.attributes["crm.workflow.step.index"] for s in steps) == [0, 1, 2]
    assert all(s.parent_span_id == workflow.span_id for s in steps)

    agent = by_name["invoke_agent lead_researcher"]
    assert agent.attributes["gen_ai.provider.name"] == "openai"
    assert agent.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert agent.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert agent.attributes["gen_ai.usage.output_tokens"] == 12
    assert agent.attributes["crm.gen_ai.cost.currency"] == "USD"
    assert agent.attributes["crm.gen_ai.cost.amount"] > 0
    llm_http = [s for s in spans if s.parent_span_id == agent.span_id and s.kind == CLIENT]
    assert len(llm_http) == 1 and "/v1/chat/completions" in llm_http[0].attributes["url.full"]

    connector = by_name["sync hubspot"]
    assert connector.attributes["service.peer.name"] == "hubspot"
    assert connector.attributes["crm.connector.records"] == 25
    assert connector.attributes["crm.connector.resource_type"] == "contacts"
    hubspot_http = [s for s in spans if s.parent_span_id == connector.span_id]
    assert len(hubspot_http) == 1 and hubspot_http[0].kind == CLIENT

    search = by_name["search leads"]
    assert search.kind == CLIENT
    assert search.attributes["db.system.name"] == "elasticsearch"
    assert search.attributes["db.operation.name"] == "search"
    assert search.attributes["db.collection.name"] == "leads"
    assert search.attributes["db.response.returned_rows"] == 3
    assert "Acme" not in search.attributes["db.query.text"]

    def metric_names() -> set[str]:
        return {p.metric for p in collector.metrics()}

    expected = {"crm.workflow.duration", "crm.workflow.step.duration", "crm.workflow.executions",
                "crm.connector.duration", "crm.connector.operations", "crm.connector.records.synced",
                "gen_ai.client.operation.duration", "gen_ai.client.token.usage", "crm.gen_ai.cost",
                "db.client.operation.duration"}
    wait_until(lambda: expected <= metric_names(), 20, f"metrics {expected}")
    points = collector.metrics()
    units = {p.metric: p.unit for p in points}
    assert units["crm.workflow.duration"] == "s" and units["gen_ai.client.token.usage"] == "{token}"
    executions = [p for p in points if p.metric == "crm.workflow.executions"]
    assert {p.attributes["crm.workflow.outcome"] for p in executions} == {"success"}
    assert all("crm.workflow.execution_id" not in p.attributes for p in points)
    assert {p.attributes.get("crm.tenant.id") for p in executions} == {"acme"}
    tokens = {p.attributes["gen_ai.token.type"] for p in points if p.metric == "gen_ai.client.token.usage"}
    assert tokens == {"input", "output"}
