"""LLM price table: USD per million input/output tokens, per provider and model.

The built-in :data:`DEFAULT_PRICES` are public list prices for a few current models — *defaults,
check your contract*. A JSON file named by ``OTEL_CRM_PRICING_FILE`` (setting ``pricing_file``) is
merged over them, model by model::

    {"openai": {"gpt-4o": {"input": 2.5, "output": 10.0}},
     "mistral_ai": {"mistral-large": {"input": 2.0, "output": 6.0}}}

A file that cannot be read or has the wrong shape produces one warning naming
``OTEL_CRM_PRICING_FILE`` and the defaults are used. Lookup is by provider, then the exact model,
then the longest model key the model starts with (``gpt-4o-2024-08-06`` → ``gpt-4o``,
``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``). An unknown model has no price (no cost recorded).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["CURRENCY", "DEFAULT_PRICES", "ModelPrice", "PriceTable", "load_price_table"]

_log = logging.getLogger("otel_crm")
CURRENCY: Final = "USD"
_PER: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / _PER


# Defaults, check your contract: list prices (USD / 1M tokens) as published by the providers.
DEFAULT_PRICES: Final[Mapping[str, Mapping[str, ModelPrice]]] = {
    "openai": {
        "gpt-4o": ModelPrice(2.50, 10.00),
        "gpt-4o-mini": ModelPrice(0.15, 0.60),
        "gpt-4.1": ModelPrice(2.00, 8.00),
        "gpt-4.1-mini": ModelPrice(0.40, 1.60),
        "gpt-4.1-nano": ModelPrice(0.10, 0.40),
        "o3": ModelPrice(2.00, 8.00),
        "o4-mini": ModelPrice(1.10, 4.40),
    },
    "anthropic": {
        "claude-sonnet-4": ModelPrice(3.00, 15.00),
        "claude-opus-4": ModelPrice(15.00, 75.00),
        "claude-haiku-4-5": ModelPrice(1.00, 5.00),
        "claude-3-5-haiku": ModelPrice(0.80, 4.00),
        "claude-3-haiku": ModelPrice(0.25, 1.25),
    },
    "perplexity": {
        "sonar": ModelPrice(1.00, 1.00),
        "sonar-pro": ModelPrice(3.00, 15.00),
    },
}


class PriceTable:
    """Prices per provider and model, with exact-then-longest-prefix model lookup (memoised)."""

    def __init__(self, prices: Mapping[str, Mapping[str, ModelPrice]]) -> None:
        self._prices = {provider: dict(models) for provider, models in prices.items()}
        # Longest keys first, so the first prefix match is the longest one.
        self._prefixes = {provider: sorted(models, key=len, reverse=True)
                          for provider, models in self._prices.items()}
        self._memo: dict[tuple[str, str], ModelPrice | None] = {}
        self._lock = threading.Lock()

    def price(self, provider: str, model: str) -> ModelPrice | None:
        key = (provider, model)
        try:
            return self._memo[key]
        except KeyError:
            pass
        found = self._lookup(provider, model)
        with self._lock:
            if len(self._memo) > 1024:  # model strings come from responses: stay bounded
                self._memo.clear()
            self._memo[key] = found
        return found

    def _lookup(self, provider: str, model: str) -> ModelPrice | None:
        models = self._prices.get(provider)
        if not models:
            return None
        exact = models.get(model)
        if exact is not None:
            return exact
        for candidate in self._prefixes[provider]:
            if model.startswith(candidate):
                return models[candidate]
        return None

    def cost(self, provider: str, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """Cost in USD, or None when the model has no price or a token count is not a whole number
        >= 0 (an agent's tokens add up over its calls: no upper bound here, each call has one)."""
        if not (_is_count(input_tokens) and _is_count(output_tokens)):
            return None
        price = self.price(provider, model)
        return None if price is None else price.cost(input_tokens, output_tokens)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse(document: Any) -> dict[str, dict[str, ModelPrice]]:
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object of providers")
    parsed: dict[str, dict[str, ModelPrice]] = {}
    for provider, models in document.items():
        if not isinstance(models, dict):
            raise ValueError(f"provider {provider!r}: expected an object of models")
        for model, entry in models.items():
            if not isinstance(entry, dict):
                raise ValueError(f"{provider}/{model}: expected {{\"input\": …, \"output\": …}}")
            values = []
            for side in ("input", "output"):
                value = entry.get(side)
                if (not isinstance(value, (int, float)) or isinstance(value, bool)
                        or not math.isfinite(value) or value < 0):
                    raise ValueError(f"{provider}/{model}: {side!r} must be a number >= 0 "
                                     "(USD per million tokens)")
                values.append(float(value))
            parsed.setdefault(str(provider), {})[str(model)] = ModelPrice(values[0], values[1])
    return parsed


def load_price_table(path: str | os.PathLike[str] | None = None) -> PriceTable:
    """The defaults, with the JSON file at `path` (if any) merged over them."""
    merged = {provider: dict(models) for provider, models in DEFAULT_PRICES.items()}
    if path is not None and not isinstance(path, (str, os.PathLike)):
        # open() of an int would take over (and then close) one of the host app's file descriptors.
        _log.warning("otel_crm: OTEL_CRM_PRICING_FILE=%s ignored (a path is a string, not a %s); using "
                     "the built-in LLM prices", "<not a path>", type(path).__name__)
        path = None
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                overrides = _parse(json.load(handle))
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            _log.warning("otel_crm: OTEL_CRM_PRICING_FILE=%s ignored (%s); using the built-in LLM "
                         "prices", path, exc)
        else:
            for provider, models in overrides.items():
                merged.setdefault(provider, {}).update(models)
    return PriceTable(merged)
