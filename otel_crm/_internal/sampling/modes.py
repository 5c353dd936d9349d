"""The mode switch: what ``sampling_mode`` puts in the tracer provider.

    tail       always-on sampler; TailSamplingProcessor in front of the export chain
    head       EntryRecordingHeadSampler (rules applied at the entry span's start); no tail buffer
    collector  always-on, everything exported for the collector's tail_sampling
    off        always-on, everything exported
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from opentelemetry.metrics import Meter
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased

from otel_crm._internal.sampling.head import EntryRecordingHeadSampler
from otel_crm._internal.sampling.policy import SAMPLING_MODES, SamplingMode, SamplingPolicy
from otel_crm._internal.sampling.tail import TailSamplingProcessor

if TYPE_CHECKING:  # settings.py imports the sampling rules: a runtime import would be a cycle
    from otel_crm._internal.settings import Settings

__all__ = ["head_sampler", "policy_from_settings", "sampler_notice", "sampling_mode", "sampling_processor",
           "standard_sampler"]

_log = logging.getLogger("otel_crm")


def sampling_mode(settings: Settings) -> SamplingMode:
    for mode in SAMPLING_MODES:  # narrows the setting's text to the Literal
        if settings.sampling_mode == mode:
            return mode
    raise ValueError(f"unknown sampling mode {settings.sampling_mode!r}")  # the resolver prevents it


def policy_from_settings(settings: Settings) -> SamplingPolicy:
    """The tail policy of these settings: ratio, slow threshold, rules; keep all in development."""
    # The development profile keeps everything, unless a ratio was set explicitly.
    keep_all = settings.profile == "development" and "sampling_ratio" not in settings.explicit
    return SamplingPolicy(ratio=settings.sampling_ratio, slow_seconds=settings.sampling_slow_seconds,
                          keep_all=keep_all, rules=settings.sampling_rules)


def standard_sampler(settings: Settings) -> Sampler | None:
    """The sampler OTEL_TRACES_SAMPLER / _ARG name (None: not set, or its package failed)."""
    name = settings.traces_sampler
    if not name:
        return None
    ratio = 1.0 if settings.traces_sampler_arg is None else settings.traces_sampler_arg
    builtin: dict[str, Callable[[], Sampler]] = {
        "always_on": lambda: ALWAYS_ON, "always_off": lambda: ALWAYS_OFF,
        "traceidratio": lambda: TraceIdRatioBased(ratio),
        "parentbased_always_on": lambda: ParentBased(ALWAYS_ON),
        "parentbased_always_off": lambda: ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": lambda: ParentBased(TraceIdRatioBased(ratio))}
    if name in builtin:
        return builtin[name]()
    try:  # an installed `opentelemetry_traces_sampler` entry point (the settings checked the name)
        (entry,) = entry_points(group="opentelemetry_traces_sampler", name=name)
        factory: Callable[[str | None], Sampler] = entry.load()
        return factory(None if settings.traces_sampler_arg is None else str(settings.traces_sampler_arg))
    except Exception as exc:
        _log.warning("otel_crm: OTEL_TRACES_SAMPLER=%r failed to load (%r); using the head sampler's ratio",
                     name, exc)
        return None


def sampler_notice(settings: Settings) -> str | None:
    """One line when OTEL_TRACES_SAMPLER is set but the sampling mode decides instead."""
    mode = sampling_mode(settings)
    if not settings.traces_sampler or mode == "head":
        return None
    return (f"otel_crm: OTEL_TRACES_SAMPLER={settings.traces_sampler!r} is not used: OTEL_CRM_SAMPLING_MODE="
            f"{mode} decides sampling (OTEL_CRM_SAMPLING_MODE=head uses it)")


def head_sampler(settings: Settings, service: str | None = None) -> Sampler:
    """The provider's sampler: the head sampler in head mode, always-on otherwise."""
    if sampling_mode(settings) == "head":
        return EntryRecordingHeadSampler(settings.sampling_ratio, settings.sampling_rules,
                                         service=service or settings.service_name,
                                         standard=standard_sampler(settings))
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
