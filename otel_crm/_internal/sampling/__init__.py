"""Every sampling decision otel_crm makes, in one package.

    policy.py       TraceFacts, SamplingRule (validation), SamplingPolicy: the decision, pure
    head.py         EntryRecordingHeadSampler: the policy at the entry span's start (head mode)
    tail.py         TailSamplingProcessor: buffer a trace's local part, fill its facts, decide (tail mode)
    spans.py        the tail sampler's span access (SDK internals probe, kept-span copy, entry fields)
    selfmetrics.py  the tail sampler's crm.sampler.* instruments
    modes.py        the mode switch: what sampling_mode puts in the tracer provider

The collector's ``tail_sampling`` policies for the same rules come from ``collector_policy.py``.
"""

from __future__ import annotations

from otel_crm._internal.sampling.head import EntryRecordingHeadSampler
from otel_crm._internal.sampling.modes import (
    head_sampler,
    policy_from_settings,
    sampler_notice,
    sampling_mode,
    sampling_processor,
)
from otel_crm._internal.sampling.policy import (
    SAMPLING_MODES,
    Decision,
    RuleProblem,
    SamplingMode,
    SamplingPolicy,
    SamplingReason,
    SamplingRule,
    TraceFacts,
    compile_rules,
)
from otel_crm._internal.sampling.tail import TailSamplingProcessor

__all__ = [
    "SAMPLING_MODES",
    "Decision",
    "EntryRecordingHeadSampler",
    "RuleProblem",
    "SamplingMode",
    "SamplingPolicy",
    "SamplingReason",
    "SamplingRule",
    "TailSamplingProcessor",
    "TraceFacts",
    "compile_rules",
    "head_sampler",
    "policy_from_settings",
    "sampler_notice",
    "sampling_mode",
    "sampling_processor",
]
