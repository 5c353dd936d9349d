"""Every upstream name otel_crm writes is in the official semantic-conventions registry, current
(not deprecated), with the registry's type, instrument and unit.

The registry entries we rely on are pinned in tests/data/semconv_registry.json, generated from the
registry YAML by tests/data/make_semconv_registry.py (core repository at a release tag; GenAI
entries from open-telemetry/semantic-conventions-genai at the commits recorded there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from otel_crm._internal import semconv
from otel_crm.helpers import agent_invocation, connector_operation, search_query, step, workflow
from otel_crm.helpers.pricing import DEFAULT_PRICES
from otel_crm.testing import CapturedTelemetry

REGISTRY = json.loads((Path(__file__).parents[1] / "data" / "semconv_registry.json").read_text())
NAMES: dict[str, dict[str, Any]] = REGISTRY["names"]
# Python types an attribute of each registry type may have on a span ("any": JSON as a string).
TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "enum": (str,), "int": (int,), "double": (float, int),
                                      "boolean": (bool,), "any": (str,), "string[]": (tuple, list)}
_NOT_NAMES = {"CRM_ATTRIBUTES"}


# Deprecated names otel_crm reads (from older instrumentations' spans, from OTEL_RESOURCE_ATTRIBUTES) so
# it can honour or replace them; it never writes them.
_READ_ONLY_LEGACY = {"NET_PEER_NAME", "HTTP_HOST", "HTTP_URL", "DEPLOYMENT_ENVIRONMENT"}


def _upstream_constants() -> dict[str, str]:
    return {key: value for key, value in vars(semconv).items()
            if key.isupper() and isinstance(value, str) and not key.startswith("CRM_") and key not in _NOT_NAMES
            and key not in _READ_ONLY_LEGACY and not value.startswith("crm.")}


@pytest.mark.parametrize("constant", sorted(_READ_ONLY_LEGACY))
def test_the_legacy_names_we_read_are_deprecated_upstream(constant: str) -> None:
    assert "deprecated" in NAMES[getattr(semconv, constant)]


def test_the_pinned_registry_names_its_source() -> None:
    assert REGISTRY["source"]["repository"] == "open-telemetry/semantic-conventions"
    assert REGISTRY["source"]["tag"].startswith("v1.") and len(REGISTRY["source"]["commit"]) == 40
    assert REGISTRY["genai_source"]["repository"] == "open-telemetry/semantic-conventions-genai"


@pytest.mark.parametrize("constant,name", sorted(_upstream_constants().items()))
def test_every_upstream_name_in_semconv_is_current_in_the_registry(constant: str, name: str) -> None:
    entry = NAMES.get(name)
    assert entry is not None, f"{constant}={name!r} is not pinned: add it to tests/data/make_semconv_registry.py"
    assert "deprecated" not in entry, f"{name} is deprecated upstream: {entry['deprecated']}"
    assert entry["stability"] in {"stable", "release_candidate", "development"}


def test_the_names_the_corrections_replace_are_deprecated_upstream() -> None:
    assert NAMES["exception.escaped"]["deprecated"]["reason"] == "obsoleted"
    usage = NAMES["db.client.connections.usage"]
    assert usage["deprecated"] == {"reason": "renamed", "renamed_to": "db.client.connection.count"}
    count = NAMES["db.client.connection.count"]
    assert (count["instrument"], count["unit"]) == ("updowncounter", "{connection}") and "deprecated" not in count
    assert NAMES["db.client.connections.state"]["deprecated"]["renamed_to"] == "db.client.connection.state"
    assert NAMES["db.client.connections.pool.name"]["deprecated"]["renamed_to"] == "db.client.connection.pool.name"
    assert NAMES["db.client.connection.state"]["members"] == ["idle", "used"]
    assert "amd64" in NAMES["host.arch"]["members"] and "x86_64" not in NAMES["host.arch"]["members"]


def test_the_default_price_table_uses_registry_provider_names() -> None:
    assert set(DEFAULT_PRICES) <= set(NAMES["gen_ai.provider.name"]["members"])


@pytest.fixture
def emitted(telemetry: CapturedTelemetry) -> CapturedTelemetry:
    """One call of every helper with every optional argument, one of them failing."""
    with workflow("qualify", execution_id="run-1", trigger="api"), step("score", index=0):
        with connector_operation("hubspot", "sync", resource_type="contacts") as op:
            op.set_records(3)
        with search_query("leads", query={"match": {"email": "x"}}) as search:
            search.set_results(2)
        with agent_invocation("openai", "gpt-4o", operation="chat", agent_name="researcher",
                              agent_id="asst_1") as call:
            call.record_usage(10, 5, response_model="gpt-4o-2024-08-06")
        with pytest.raises(KeyError), agent_invocation("anthropic", "claude-sonnet-4", agent_name="writer"):
            raise KeyError("boom")
    return telemetry


def _check(name: str, value: Any, where: str) -> None:
    if name.startswith("crm."):
        return
    entry = NAMES.get(name)
    assert entry is not None, f"{where}: {name} is not in the pinned registry"
    assert entry["kind"] == "attribute" and "deprecated" not in entry, f"{where}: {name}: {entry}"
    assert isinstance(value, TYPES[entry["type"]]) and not (
        entry["type"] == "int" and isinstance(value, bool)), f"{where}: {name}={value!r} is not {entry['type']}"
    if "members" in entry and name != "error.type":  # error.type: the exception's class name is allowed
        assert value in entry["members"], f"{where}: {name}={value!r} is not a registry value"


def test_every_attribute_the_helpers_put_on_spans_and_events_is_current_and_typed(emitted: CapturedTelemetry) -> None:
    spans = emitted.spans()
    assert len(spans) == 6
    for span in spans:
        for name, value in (span.attributes or {}).items():
            _check(name, value, span.name)
        for event in span.events:
            assert event.name == "exception"
            for name, value in (event.attributes or {}).items():
                _check(name, value, f"{span.name} event")


def test_every_upstream_metric_the_helpers_record_matches_the_registry(emitted: CapturedTelemetry) -> None:
    instruments = {"gen_ai.client.operation.duration": "histogram", "gen_ai.client.token.usage": "histogram",
                   "db.client.operation.duration": "histogram"}
    for metric, instrument in instruments.items():
        entry = NAMES[metric]
        assert entry["kind"] == "metric" and entry["instrument"] == instrument and "deprecated" not in entry
        assert emitted.metric_unit(metric) == entry["unit"]
        for point in emitted.metric_points(metric):
            for name, value in point.attributes.items():
                _check(name, value, metric)
