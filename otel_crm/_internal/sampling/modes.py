"""The mode switch: what ``sampling_mode`` puts in the tracer provider.

    tail       always-on sampler; TailSamplingProcessor in front of the export chain
    head       EntryRecordingHeadSampler (rules applied at the entry span's start); no tail buffer
    collector  always-on, everything exported for the collector's tail_sampling
    off        always-on, everything exported
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.metrics import Meter
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler

from otel_crm._internal.sampling.head import EntryRecordingHeadSampler
from otel_crm._internal.sampling.policy import SAMPLING_MODES, SamplingMode, SamplingPolicy
from otel_crm._internal.sampling.tail import TailSamplingProcessor

if TYPE_CHECKING:  # settings.py imports the sampling rules: a runtime import would be a cycle
    from otel_crm._internal.settings import Settings

__all__ = ["head_sampler", "policy_from_settings", "sampling_mode", "sampling_processor"]


def sampling_mode(settings: Settings) -> SamplingMode:
    for mode in SAMPLING_MODES:  # narrows the setting's text to the Literal
        if settings.sampling_mode == mode:
            return mode
    raise ValueError(f"unknown sampling mode {settings.sampling_mode!r}")  # the resolver prevents it


def policy_from_settings(settings: Settings) -> SamplingPolicy:
    """The tail policy of these settings: ratio, slow threshold, rules; keep all in development."""
    return SamplingPolicy(ratio=settings.sampling_ratio, slow_seconds=settings.sampling_slow_seconds,
                          keep_all=settings.profile == "development", rules=settings.sampling_rules)


def head_sampler(settings: Settings, service: str | None = None) -> Sampler:
    """The provider's sampler: the head sampler in head mode, always-on otherwise."""
    if sampling_mode(settings) == "head":
        return EntryRecordingHeadSampler(settings.sampling_ratio, settings.sampling_rules,
                                         service=service or settings.service_name)
    return ALWAYS_ON


def sampling_processor(settings: Settings, downstream: SpanProcessor, meter: Meter | None) -> SpanProcessor:
    """Put the in-process tail sampler in front of `downstream` when the mode asks for it.

    Returns `downstream` itself in other modes; in tail mode the returned ``TailSamplingProcessor``
    answers ``decision_for(trace_id)``."""
    if sampling_mode(settings) != "tail":
        return downstream
    return TailSamplingProcessor(
        downstream, policy_from_settings(settings),
        max_traces=settings.sampling_max_traces,
        max_spans_per_trace=settings.sampling_max_spans_per_trace,
        max_spans=settings.sampling_max_spans,
        max_trace_age_s=settings.sampling_max_trace_age_seconds,
        meter=meter)
