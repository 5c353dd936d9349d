"""Head sampling (``OTEL_CRM_SAMPLING_MODE=head``): decide when the entry span starts.

What a rule can match at that moment (the rest is unknown until the span ends):
    ``operation`` — the span's name as started; ``method`` and ``route`` — only if the instrumentation
    passes ``http.request.method`` / ``http.route`` among the start attributes (Flask does both; others
    may set the route later, then a route rule never matches in head mode); ``tenant`` — the tenant
    context open when the span starts (otel_crm's web integration opens it before the server span);
    ``service`` — this process's ``service.name``. ``errors`` and ``slow`` do not apply: nothing has
    failed or lasted yet. A span with a parent (local or remote) follows its parent's decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.util.types import Attributes

from otel_crm._internal import semconv
from otel_crm._internal.sampling.policy import SamplingPolicy, SamplingRule, TraceFacts
from otel_crm._internal.tenancy import current_tenant

__all__ = ["EntryRecordingHeadSampler"]


def _text(value: object) -> str | None:
    return None if value is None else value if isinstance(value, str) else str(value)


class EntryRecordingHeadSampler(Sampler):
    """`ParentBased(TraceIdRatioBased(ratio))` with per-rule ratios for new traces, except that an
    unsampled *entry* span (no parent, or a remote one) is still recorded, never exported.

    RED metrics are computed from entry spans when they end, and the SDK ends only recorded
    spans: without this, head mode would count 10% of requests. Children of an unsampled entry
    span are dropped as usual, so the extra cost is one unexported span per request.
    """

    def __init__(self, ratio: float, rules: Sequence[SamplingRule] = (), *, service: str | None = None,
                 standard: Sampler | None = None):
        self._ratio = ratio
        # `standard`: the sampler OTEL_TRACES_SAMPLER names decides every span instead of the ratio
        # and rules; an entry span it drops is still recorded (RED metrics), as below.
        self._policy = SamplingPolicy(ratio=ratio, rules=tuple(rules) if standard is None else ())
        self._service = service
        self._parent_based = standard if standard is not None else ParentBased(TraceIdRatioBased(ratio))
        self._standard = standard

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,  # noqa: PLR0917 - the SDK signature
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state: Any = None) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        if parent.is_valid or not self._policy.rules:
            result = self._parent_based.should_sample(parent_context, trace_id, name, kind, attributes,
                                                      links, trace_state)
            if result.decision is Decision.DROP and (not parent.is_valid or parent.is_remote):
                # A DROP result carries no attributes; the recorded span needs the caller's.
                return SamplingResult(Decision.RECORD_ONLY, attributes, result.trace_state)
            return result
        given = attributes or {}
        tenant = current_tenant(parent_context)
        facts = TraceFacts(route=_text(given.get(semconv.HTTP_ROUTE)),
                           method=_text(given.get(semconv.HTTP_REQUEST_METHOD)),
                           tenant=tenant.id if tenant is not None else None, operation=name,
                           service=self._service)
        decision = self._policy.decide_head(trace_id, facts)
        if not decision.keep:
            return SamplingResult(Decision.RECORD_ONLY, attributes)
        if decision.rule is None:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {**given, semconv.CRM_SAMPLING_RULE: decision.rule})

    def get_description(self) -> str:
        if self._standard is not None:
            return f"EntryRecordingHeadSampler{{{self._standard.get_description()}}}"
        return f"EntryRecordingHeadSampler{{{self._ratio}}}"
