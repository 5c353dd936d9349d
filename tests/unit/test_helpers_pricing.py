"""LLM price table: defaults, longest-prefix lookup, file overrides, bad files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from otel_crm._internal import semconv
from otel_crm.helpers import agent_invocation
from otel_crm.helpers.pricing import DEFAULT_PRICES, ModelPrice, PriceTable, load_price_table
from otel_crm.testing import capture_telemetry


def test_defaults_cover_current_models() -> None:
    table = load_price_table()
    assert table.price("openai", "gpt-4o") == ModelPrice(2.50, 10.00)
    assert table.price("openai", "gpt-4o-mini") == ModelPrice(0.15, 0.60)
    sonnet = DEFAULT_PRICES["anthropic"]["claude-sonnet-4"]
    assert table.price("anthropic", "claude-sonnet-4-20250514") == sonnet
    assert table.price("perplexity", "sonar") is not None


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-4o", "gpt-4o"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o-mini", "gpt-4o-mini"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
    ("gpt-4.1-2025-04-14", "gpt-4.1"),
])
def test_exact_then_longest_prefix(model: str, expected: str) -> None:
    assert load_price_table().price("openai", model) == DEFAULT_PRICES["openai"][expected]


def test_unknown_model_or_provider_has_no_price() -> None:
    table = load_price_table()
    assert table.price("openai", "gpt-3") is None
    assert table.price("nobody", "gpt-4o") is None
    assert table.cost("openai", "text-davinci", 10, 10) is None


def test_cost_is_per_million_tokens() -> None:
    table = PriceTable({"p": {"m": ModelPrice(2.0, 8.0)}})
    assert table.cost("p", "m", 500_000, 250_000) == pytest.approx(1.0 + 2.0)
    assert table.cost("p", "m", 0, 0) == 0.0


def test_file_overrides_and_extends_defaults(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"openai": {"gpt-4o": {"input": 1, "output": 2}},
                                "mistral": {"mistral-large": {"input": 2.0, "output": 6.0}}}))
    table = load_price_table(str(path))
    assert table.price("openai", "gpt-4o-2024-11-20") == ModelPrice(1.0, 2.0)
    assert table.price("openai", "gpt-4o-mini") == DEFAULT_PRICES["openai"]["gpt-4o-mini"]  # kept
    assert table.price("mistral", "mistral-large-2411") == ModelPrice(2.0, 6.0)


@pytest.mark.parametrize("content", [
    "{not json",
    "[]",
    '{"openai": []}',
    '{"openai": {"gpt-4o": 3}}',
    '{"openai": {"gpt-4o": {"input": "cheap", "output": 1}}}',
    '{"openai": {"gpt-4o": {"input": -1, "output": 1}}}',
    '{"openai": {"gpt-4o": {"input": 1}}}',
])
def test_bad_file_warns_once_and_uses_defaults(tmp_path: Path, content: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        table = load_price_table(str(path))
    assert table.price("openai", "gpt-4o") == DEFAULT_PRICES["openai"]["gpt-4o"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "OTEL_CRM_PRICING_FILE" in warnings[0].getMessage()


def test_missing_file_warns_and_uses_defaults(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        table = load_price_table(str(tmp_path / "absent.json"))
    assert table.price("anthropic", "claude-opus-4") is not None
    assert ["OTEL_CRM_PRICING_FILE" in r.getMessage() for r in caplog.records] == [True]


def test_agent_cost_uses_the_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"openai": {"gpt-4o": {"input": 10, "output": 20}}}))
    with capture_telemetry(pricing_file=str(path)) as telemetry:
        with agent_invocation("openai", "gpt-4o") as call:
            call.record_usage(1_000_000, 1_000_000)
        span = telemetry.span("chat gpt-4o")
        assert span.attributes is not None
        assert span.attributes[semconv.CRM_GEN_AI_COST_AMOUNT] == pytest.approx(30.0)
        assert telemetry.metric_sum("crm.gen_ai.cost") == pytest.approx(30.0)


def test_agent_cost_with_a_bad_file_uses_defaults(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "prices.json"
    path.write_text("{")
    with capture_telemetry(pricing_file=str(path)) as telemetry, \
            caplog.at_level(logging.WARNING, logger="otel_crm"):
        for _ in range(3):
            with agent_invocation("openai", "gpt-4o") as call:
                call.record_usage(1_000_000, 0)
        assert telemetry.metric_sum("crm.gen_ai.cost") == pytest.approx(3 * 2.5)
    # Loaded once per runtime: one warning, not one per call.
    assert sum("OTEL_CRM_PRICING_FILE" in r.getMessage() for r in caplog.records) == 1
