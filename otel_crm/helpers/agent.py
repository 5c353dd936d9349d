"""LLM calls and AI agents, per the OpenTelemetry GenAI conventions, plus their cost.

- ``agent_invocation("openai", "gpt-4o")``: CLIENT span ``chat gpt-4o`` (``{operation} {model}``).
- ``agent_invocation("openai", "gpt-4o", agent_name="researcher")``: an in-process agent, INTERNAL
  span ``invoke_agent researcher`` (operation ``invoke_agent``) with ``gen_ai.agent.name``/``.id``.

Metrics: ``gen_ai.client.operation.duration`` (s; ``error.type`` on failure) and
``gen_ai.client.token.usage`` ({token}; ``gen_ai.token.type`` input/output), by
``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model``; and ``crm.gen_ai.cost`` ({USD}), by the same plus
``crm.gen_ai.cost.currency``. All carry the guarded ``crm.tenant.id``. Cost comes from
:mod:`otel_crm.helpers.pricing`; a model without a price gets no cost (not zero).

Message content is recorded only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is
true, scrubbed, as JSON in ``gen_ai.input.messages`` / ``gen_ai.output.messages``.
"""

from __future__ import annotations

import json
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from otel_crm._internal import semconv
from otel_crm._internal.runtime import Runtime
from otel_crm._internal.safety import report_internal_error
from otel_crm.helpers._base import (
    Attributes,
    Instrumented,
    Operation,
    PerRuntime,
    metric_attributes,
)
from otel_crm.helpers._shared import BoundSets, Memo
from otel_crm.helpers._validate import (
    MAX_TOKENS,
    NAME,
    TOKENS,
    VALID,
    Arguments,
    checked_count,
    checked_name,
    is_name,
)
from otel_crm.helpers.pricing import CURRENCY, PriceTable, load_price_table

__all__ = ["AgentInvocation", "AgentInvocationRun", "agent_invocation"]

INVOKE_AGENT: Final = "invoke_agent"
CHAT: Final = "chat"
_MAX_DEPTH = 16


class _Instruments:
    __slots__ = ("cost", "duration", "tokens")

    def __init__(self, runtime: Runtime) -> None:
        meter = runtime.meter()
        self.duration = meter.create_histogram(
            semconv.GEN_AI_CLIENT_OPERATION_DURATION, unit="s", description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(semconv.GEN_AI_DURATION_BUCKETS))
        self.tokens = meter.create_histogram(
            semconv.GEN_AI_CLIENT_TOKEN_USAGE, unit="{token}", description="Number of tokens used.",
            explicit_bucket_boundaries_advisory=list(semconv.GEN_AI_TOKEN_BUCKETS))
        self.cost = meter.create_counter(
            semconv.CRM_GEN_AI_COST, unit="{USD}",
            description="Cost of GenAI calls from the price table (defaults, check your contract).")


_instruments: PerRuntime[_Instruments] = PerRuntime("otel_crm.helpers.agent", _Instruments)


_prices: PerRuntime[PriceTable] = PerRuntime("otel_crm.helpers.pricing",
                                             lambda runtime: load_price_table(runtime.settings.pricing_file))


class AgentInvocationRun(Operation):
    """One LLM call or agent run; the handle of ``with agent_invocation(...) as call``."""

    __slots__ = ("_cost_key", "_cost_value", "_input_tokens", "_output_tokens", "_response_model", "_shape")
    component = "helpers.agent"

    def __init__(self, shape: _Shape, start: Attributes) -> None:
        Operation.__init__(self, shape.span_name, shape.kind, start)
        self._shape = shape
        self._response_model: str | None = None
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._cost_key: tuple[int | None, int | None, str | None] | None = None
        self._cost_value: float | None = None

    def record_usage(self, input_tokens: int, output_tokens: int, *,
                     response_model: str | None = None) -> None:
        """Tokens used; called several times (an agent's several LLM calls), they add up.

        All or nothing: a call with any invalid argument (not a whole number from 0 to 10**9 per
        call, or a response model that is not a name) records nothing from that call, so a bogus
        count is never priced."""
        if (type(input_tokens) is int and 0 <= input_tokens <= MAX_TOKENS and type(output_tokens) is int
                and 0 <= output_tokens <= MAX_TOKENS and (response_model is None or is_name(response_model))):
            # The usual call, checked inline (same rules as below: plain ints in range, a name or None)
            self._input_tokens = (self._input_tokens or 0) + input_tokens
            self._output_tokens = (self._output_tokens or 0) + output_tokens
            if response_model is not None:
                self._response_model = response_model
            return
        inputs = checked_count(input_tokens, MAX_TOKENS)
        outputs = checked_count(output_tokens, MAX_TOKENS)
        no_model = response_model is None or (isinstance(response_model, str) and not response_model)
        model = None if no_model else checked_name(response_model)
        if inputs is None:
            self._reject("record_usage.input_tokens", input_tokens, TOKENS)
        if outputs is None:
            self._reject("record_usage.output_tokens", output_tokens, TOKENS)
        if model is None and not no_model:
            self._reject("record_usage.response_model", response_model, f"None or {NAME}")
            return
        if inputs is None or outputs is None:
            return
        self._input_tokens = (self._input_tokens or 0) + inputs
        self._output_tokens = (self._output_tokens or 0) + outputs
        if model is not None:
            self._response_model = model

    def record_messages(self, input_messages: Any = None, output_messages: Any = None) -> None:
        """Prompt and completion, recorded only when message capture is enabled, then scrubbed.

        Accepts a string, a list of strings, or chat messages (``{"role", "content"}`` dicts, or
        dicts already in the GenAI ``{"role", "parts"}`` shape).
        """
        try:
            span = self._span
            runtime = self._runtime
            if (span is None or runtime is None or not runtime.settings.capture_message_content
                    or not span.is_recording()):
                return
            scrub = getattr(runtime.scrubber, "scrub_text", None)
            if input_messages is not None:
                span.set_attribute(semconv.GEN_AI_INPUT_MESSAGES,
                                   _serialise(input_messages, "user", scrub))
            if output_messages is not None:
                span.set_attribute(semconv.GEN_AI_OUTPUT_MESSAGES,
                                   _serialise(output_messages, "assistant", scrub))
        except Exception as exc:
            report_internal_error(self.component, exc)

    @property
    def input_tokens(self) -> int | None:
        return self._input_tokens

    @property
    def output_tokens(self) -> int | None:
        return self._output_tokens

    def _cost(self, runtime: Runtime) -> float | None:
        if self._input_tokens is None:
            return None
        if self._cost_key == (self._input_tokens, self._output_tokens, self._response_model):
            return self._cost_value  # the span and the metric ask for the same cost
        self._cost_key = (self._input_tokens, self._output_tokens, self._response_model)
        self._cost_value = self._price(runtime)
        return self._cost_value

    def _price(self, runtime: Runtime) -> float | None:
        if self._input_tokens is None:
            return None
        shape = self._shape
        model = self._response_model or shape.request_model
        cost = _prices(runtime).cost(shape.provider, model, self._input_tokens, self._output_tokens or 0)
        if cost is None and self._response_model:
            cost = _prices(runtime).cost(shape.provider, shape.request_model, self._input_tokens,
                                         self._output_tokens or 0)
        return cost

    def _ending(self, span: trace.Span) -> None:
        if self._response_model is not None:
            span.set_attribute(semconv.GEN_AI_RESPONSE_MODEL, self._response_model)
        if self._input_tokens is not None:
            span.set_attribute(semconv.GEN_AI_USAGE_INPUT_TOKENS, self._input_tokens)
            span.set_attribute(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, self._output_tokens or 0)
            if self._runtime is not None:
                cost = self._cost(self._runtime)
                if cost is not None:
                    span.set_attribute(semconv.CRM_GEN_AI_COST_AMOUNT, cost)
                    span.set_attribute(semconv.CRM_GEN_AI_COST_CURRENCY, CURRENCY)

    def _record(self, runtime: Runtime, duration: float, error: str | None) -> None:
        instruments = _instruments(runtime)
        tenant = self._tenant_id
        models = self._shape.models
        model = self._response_model
        sets = models.get(model)
        if sets is None:
            sets = models.put(model, _ModelSets(self._shape.metric_base, model))
        base = sets.base
        if error is None:  # the usual case: sets bound once (see BoundSets)
            attributes = sets.get(runtime, _DURATION, _DURATION if tenant is None else (_DURATION, tenant),
                                  base, tenant)
        else:
            attributes = metric_attributes(runtime, _DURATION, base, tenant, error=error)
        instruments.duration.record(duration, attributes, self._context)
        if self._input_tokens is None:
            return
        inputs, outputs = sets.variants(runtime, _TOKENS, _TOKENS if tenant is None else (_TOKENS, tenant),
                                        base, tenant, extras=_TOKEN_TYPES)
        instruments.tokens.record(self._input_tokens, inputs, self._context)
        instruments.tokens.record(self._output_tokens or 0, outputs, self._context)
        cost = self._cost(runtime)
        if cost is not None:
            instruments.cost.add(cost, sets.get(runtime, _COST, _COST if tenant is None else (_COST, tenant),
                                                base, tenant, extra=_CURRENCY), self._context)


_DURATION = semconv.GEN_AI_CLIENT_OPERATION_DURATION
_TOKENS = semconv.GEN_AI_CLIENT_TOKEN_USAGE
_COST = semconv.CRM_GEN_AI_COST
_TOKEN_TYPES: Final = ({semconv.GEN_AI_TOKEN_TYPE: "input"}, {semconv.GEN_AI_TOKEN_TYPE: "output"})
_CURRENCY: Final = {semconv.CRM_GEN_AI_COST_CURRENCY: CURRENCY}


class _ModelSets(BoundSets):
    """The metrics' base attributes with one response model (or none), and their bound sets."""

    __slots__ = ("base",)

    def __init__(self, metric_base: Attributes, response_model: str | None) -> None:
        super().__init__()
        self.base = metric_base if response_model is None else {
            **metric_base, semconv.GEN_AI_RESPONSE_MODEL: response_model}


class _Shape:
    """What one provider, model, operation and agent always give: checked once, then memoised."""

    __slots__ = ("kind", "metric_base", "models", "provider", "request_model", "span_name", "start")

    def __init__(self, provider: str, model: str, operation: str | None, agent_name: str | None,
                 agent_id: str | None, *, arguments: Arguments) -> None:
        if operation is None:
            operation = INVOKE_AGENT if agent_name else CHAT
        if operation == INVOKE_AGENT:
            self.span_name = f"{INVOKE_AGENT} {agent_name}" if agent_name else INVOKE_AGENT
            self.kind = SpanKind.INTERNAL  # an in-process agent
        else:
            self.span_name = f"{operation} {model}"
            self.kind = SpanKind.CLIENT
        self.provider = provider
        self.request_model = model
        self.metric_base: Attributes = {
            semconv.GEN_AI_OPERATION_NAME: operation,
            semconv.GEN_AI_PROVIDER_NAME: provider,
            semconv.GEN_AI_REQUEST_MODEL: model,
        }
        start = dict(self.metric_base)
        if agent_name:
            start[semconv.GEN_AI_AGENT_NAME] = agent_name
        if agent_id:
            start[semconv.GEN_AI_AGENT_ID] = agent_id
        self.start = arguments.note(start)
        # response model -> its sets: response models come from the provider's answers, so bounded
        self.models: Memo[str | None, _ModelSets] = Memo(16)


_shapes: Memo[tuple[Any, ...], _Shape] = Memo(256)


def _shape(provider: str, model: str, operation: str | None, agent_name: str | None,
           agent_id: str | None) -> _Shape:
    """A new shape (memoised when the arguments are valid)."""
    key = (provider, model, operation, agent_name, agent_id)
    if (is_name(provider) and is_name(model) and (operation is None or is_name(operation))
            and (agent_name is None or is_name(agent_name)) and (agent_id is None or is_name(agent_id))):
        return _shapes.put(key, _Shape(provider, model, operation, agent_name, agent_id, arguments=VALID))
    arguments = Arguments(AgentInvocationRun.component, "agent_invocation")  # a misuse: reported every call
    return _Shape(arguments.name("provider", provider), arguments.name("model", model),
                  arguments.optional_name("operation", operation),
                  arguments.optional_name("agent_name", agent_name),
                  arguments.optional_name("agent_id", agent_id), arguments=arguments)


class AgentInvocation(Instrumented[AgentInvocationRun]):
    """Returned by :func:`agent_invocation`."""

    __slots__ = ("_shape",)

    def __init__(self, shape: _Shape) -> None:
        self._shape = shape

    def _operation(self, args: tuple[Any, ...] | None, code_function: str | None) -> AgentInvocationRun:
        start = self._shape.start
        return AgentInvocationRun(self._shape, start if code_function is None else self._with_function(
            start, code_function))


def agent_invocation(provider: str, model: str, *, operation: str | None = None,
                     agent_name: str | None = None, agent_id: str | None = None) -> AgentInvocation:
    """Trace one LLM call (``operation`` defaults to ``chat``) or, with ``agent_name``, one run of an
    in-process agent (``invoke_agent``). ``provider`` is the ``gen_ai.provider.name`` value:
    ``openai``, ``anthropic``, ``perplexity``, ``aws.bedrock``…

    ``with agent_invocation("openai", "gpt-4o") as call:`` … ``call.record_usage(812, 95,
    response_model=resp.model)``. Also ``async with`` and a decorator (then use the span only).
    """
    try:
        shape = _shapes.get((provider, model, operation, agent_name, agent_id))
    except Exception:  # an unhashable argument: checked (and refused) below
        shape = None
    return AgentInvocation(shape if shape is not None else _shape(provider, model, operation, agent_name, agent_id))


# --- message content ------------------------------------------------------------------------------
def _serialise(messages: Any, default_role: str, scrub: Any) -> str:
    if isinstance(messages, (str, dict)):
        messages = [messages]
    normalised = [_message(m, default_role) for m in messages]
    return json.dumps(_scrubbed(normalised, scrub, 0), ensure_ascii=False, default=str,
                      separators=(",", ":"))


def _message(message: Any, default_role: str) -> Any:
    if isinstance(message, str):
        return {"role": default_role, "parts": [{"type": "text", "content": message}]}
    if isinstance(message, dict) and "parts" not in message and isinstance(message.get("content"), str):
        converted = {key: value for key, value in message.items() if key != "content"}
        converted.setdefault("role", default_role)
        converted["parts"] = [{"type": "text", "content": message["content"]}]
        return converted
    return message


def _scrubbed(value: Any, scrub: Any, depth: int) -> Any:
    if isinstance(value, str):
        return scrub(value) if scrub is not None else value
    if depth >= _MAX_DEPTH:
        return "…"
    if isinstance(value, dict):
        return {str(key): _scrubbed(item, scrub, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(item, scrub, depth + 1) for item in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _scrubbed(str(value), scrub, depth)
