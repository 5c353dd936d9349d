"""Head mode: the entry-recording head sampler, its rules (what is known at span start), the mode switch."""

from __future__ import annotations

import random

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.sampling import Decision as SdkDecision
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

import otel_crm
from otel_crm._internal.sampling import (
    EntryRecordingHeadSampler,
    SamplingPolicy,
    TraceFacts,
    compile_rules,
    head_sampler,
    policy_from_settings,
    sampler_notice,
    sampling_processor,
)
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.traces import create_tracer_provider
from otel_crm.testing import capture_telemetry

RULES = [{"name": "health", "route": "/health*", "ratio": 0, "errors": False},
         {"name": "vip", "tenant": "vip-*", "ratio": 1},
         {"name": "sync", "operation": "sync *", "service": "crm-worker", "ratio": 1}]
SERVER = trace.SpanKind.SERVER


def test_head_mode_exports_the_ratio_but_counts_every_request() -> None:
    bound = TraceIdRatioBased.get_bound_for_rate(0.25)
    with capture_telemetry(sampling_mode="head", sampling_ratio=0.25) as telemetry:
        tracer = trace.get_tracer("t")  # capture_telemetry honours the sampling mode globally too
        for _ in range(400):
            with tracer.start_as_current_span("list_leads", kind=trace.SpanKind.SERVER,
                                              attributes={"http.request.method": "GET", "http.route": "/leads"}):
                with tracer.start_as_current_span("SELECT leads"):
                    pass
        roots = [s for s in telemetry.spans() if s.name == "list_leads"]
        children = [s for s in telemetry.spans() if s.name == "SELECT leads"]
        expected = [s for s in roots if s.context.trace_id & 0xFFFFFFFFFFFFFFFF < bound]
        assert 50 < len(roots) < 150 and roots == expected, "exported: exactly the trace-id ratio"
        assert len(children) == len(roots), "children follow their root"
        assert telemetry.metric_sum("crm.requests") == 400, "RED counts every request, not the sampled share"
        # ...in one series: an unsampled entry span keeps the attributes it was started with.
        assert telemetry.metric_sum("crm.requests", **{"crm.operation.name": "GET /leads",
                                                        "http.route": "/leads"}) == 400


def test_head_mode_follows_a_remote_parents_decision_but_still_counts_it() -> None:
    with capture_telemetry(sampling_mode="head", sampling_ratio=1.0) as telemetry:
        tracer = trace.get_tracer("t")
        for flags in (TraceFlags.DEFAULT, TraceFlags.SAMPLED):
            remote = SpanContext(0x1234 + flags, 0x99, is_remote=True, trace_flags=TraceFlags(flags))
            with tracer.start_as_current_span("GET /leads", context=set_span_in_context(NonRecordingSpan(remote)),
                                              kind=trace.SpanKind.SERVER):
                with tracer.start_as_current_span("child") as child:
                    assert child.is_recording() is bool(flags), "children of an unsampled entry are dropped"
        assert [s.context.trace_flags.sampled for s in telemetry.spans() if s.name == "GET /leads"] == [True]
        assert telemetry.metric_sum("crm.requests") == 2


def test_other_modes_record_everything() -> None:
    assert isinstance(head_sampler(resolve_settings({}, sampling_mode="head")), EntryRecordingHeadSampler)
    for mode in ("tail", "collector", "off"):
        assert head_sampler(resolve_settings({}, sampling_mode=mode)).get_description() == "AlwaysOnSampler"


def test_rules_decide_on_what_is_known_when_the_entry_span_starts() -> None:
    with capture_telemetry(sampling_mode="head", sampling_ratio=0.5, sampling_rules=RULES,
                           service_name="crm-worker") as telemetry:
        tracer = trace.get_tracer("t")
        for _ in range(50):
            with tracer.start_as_current_span("GET /health", kind=SERVER,
                                              attributes={"http.route": "/health", "http.request.method": "GET"}):
                pass
            with otel_crm.tenant_context("vip-acme"), tracer.start_as_current_span("GET /leads", kind=SERVER):
                with tracer.start_as_current_span("SELECT leads"):
                    pass
            with tracer.start_as_current_span("sync hubspot"):
                pass
            with tracer.start_as_current_span("GET", kind=SERVER) as late:
                late.set_attribute("http.route", "/health")  # known only after the start: not matched
        exported = telemetry.spans()
        assert not [s for s in exported if s.name == "GET /health"], "ratio 0"
        vip = [s for s in exported if s.name == "GET /leads"]
        assert len(vip) == 50 and {s.attributes["crm.sampling.rule"] for s in vip} == {"vip"}
        children = [s for s in exported if s.name == "SELECT leads"]
        assert len(children) == 50, "children follow the entry"
        assert all("crm.sampling.rule" not in s.attributes for s in children), "only the entry says which rule"
        assert len([s for s in exported if s.name == "sync hubspot"]) == 50
        late = [s for s in exported if s.name == "GET"]
        assert 5 < len(late) < 45, "no rule matched: the default ratio (0.5)"
        assert all("crm.sampling.rule" not in s.attributes for s in late)
        assert telemetry.metric_sum("crm.requests") == 200, "RED still counts every entry span"


def test_head_and_tail_agree_on_a_rule_ratio() -> None:
    rules = compile_rules([{"name": "webhooks", "route": "/webhooks/*", "ratio": 0.3}])[0]
    sampler = EntryRecordingHeadSampler(0.1, rules)
    policy = SamplingPolicy(ratio=0.1, rules=rules)
    sdk = TraceIdRatioBased(0.3)
    rng = random.Random(3)
    for _ in range(5000):
        trace_id = rng.getrandbits(128)
        head = sampler.should_sample(None, trace_id, "POST", attributes={"http.route": "/webhooks/x"})
        tail = policy.decide(trace_id, TraceFacts(False, 0.01, route="/webhooks/x"))
        expected = sdk.should_sample(None, trace_id, "x").decision is SdkDecision.RECORD_AND_SAMPLE
        assert (head.decision is SdkDecision.RECORD_AND_SAMPLE) == tail.keep == expected
        if not expected:
            assert head.decision is SdkDecision.RECORD_ONLY, "an unsampled entry is still recorded"


def test_a_remote_parent_decides_whatever_the_rules_say() -> None:
    sampler = EntryRecordingHeadSampler(0.1, compile_rules(RULES)[0])
    for flags, expected in ((TraceFlags.DEFAULT, SdkDecision.RECORD_ONLY),
                            (TraceFlags.SAMPLED, SdkDecision.RECORD_AND_SAMPLE)):
        remote = SpanContext(0x1234, 0x99, is_remote=True, trace_flags=TraceFlags(flags))
        result = sampler.should_sample(set_span_in_context(NonRecordingSpan(remote)), 0x1234, "GET /health",
                                       attributes={"http.route": "/health"})
        assert result.decision is expected


def test_the_service_comes_from_the_resource() -> None:
    settings = resolve_settings({}, sampling_mode="head", sampling_ratio=0.0, traces_exporter=["none"],
                                sampling_rules=[{"name": "mine", "service": "billing", "ratio": 1}])
    provider = create_tracer_provider(settings, Resource({"service.name": "billing"}))
    with provider.get_tracer("t").start_as_current_span("job") as span:
        assert span.get_span_context().trace_flags.sampled
    other = create_tracer_provider(settings, Resource({"service.name": "crm"}))
    with other.get_tracer("t").start_as_current_span("job") as span:
        assert not span.get_span_context().trace_flags.sampled


def test_only_tail_mode_puts_a_tail_sampler_in_front_of_the_export_chain() -> None:
    from opentelemetry.sdk.trace import SpanProcessor

    from otel_crm._internal.sampling import TailSamplingProcessor

    downstream = SpanProcessor()
    tail = sampling_processor(resolve_settings({}, sampling_mode="tail"), downstream, None)
    assert isinstance(tail, TailSamplingProcessor)
    assert tail.decision_for(1) is None
    for mode in ("head", "collector", "off"):
        assert sampling_processor(resolve_settings({}, sampling_mode=mode), downstream, None) is downstream


def _roots_kept(telemetry: object, name: str) -> list[int]:
    return [s.context.trace_id for s in telemetry.spans() if s.name == name]  # type: ignore[attr-defined]


def test_otel_traces_sampler_decides_in_head_mode_and_every_request_is_still_counted() -> None:
    bound = TraceIdRatioBased.get_bound_for_rate(0.25)
    with capture_telemetry(sampling_mode="head", sampling_ratio=1.0, traces_sampler="traceidratio",
                           traces_sampler_arg=0.25) as telemetry:
        tracer = trace.get_tracer("t")
        for _ in range(400):
            with tracer.start_as_current_span("GET /leads", kind=SERVER):
                pass
        kept = _roots_kept(telemetry, "GET /leads")
        assert 50 < len(kept) < 150 and all(t & 0xFFFFFFFFFFFFFFFF < bound for t in kept)
        assert telemetry.metric_sum("crm.requests") == 400
    with capture_telemetry(sampling_mode="head", traces_sampler="always_off") as telemetry:
        with trace.get_tracer("t").start_as_current_span("GET /leads", kind=SERVER):
            pass
        assert _roots_kept(telemetry, "GET /leads") == [] and telemetry.metric_sum("crm.requests") == 1


@pytest.mark.parametrize(("name", "remote_sampled", "exported"), [
    ("parentbased_always_on", False, False), ("always_on", False, True),
    ("parentbased_always_off", True, True), ("always_off", True, False),
])
def test_parent_based_or_not_as_the_standard_name_says(name: str, remote_sampled: bool, exported: bool) -> None:
    sampler = head_sampler(resolve_settings({"OTEL_CRM_SAMPLING_MODE": "head", "OTEL_TRACES_SAMPLER": name}))
    assert ("ParentBased" in sampler.get_description()) is name.startswith("parentbased")
    flags = TraceFlags(TraceFlags.SAMPLED if remote_sampled else TraceFlags.DEFAULT)
    remote = set_span_in_context(NonRecordingSpan(SpanContext(0x1234, 0x99, is_remote=True, trace_flags=flags)))
    result = sampler.should_sample(remote, 0x1234, "GET /leads", SERVER)
    assert result.decision.is_sampled() is exported
    assert result.decision is not SdkDecision.DROP, "an entry span is always recorded (RED metrics)"


def test_other_modes_say_in_one_line_which_mode_wins() -> None:
    assert sampler_notice(resolve_settings({"OTEL_TRACES_SAMPLER": "always_on"},
                                           sampling_mode="head")) is None
    assert sampler_notice(resolve_settings({})) is None
    for mode in ("tail", "collector", "off"):
        settings = resolve_settings({"OTEL_TRACES_SAMPLER": "always_on", "OTEL_CRM_SAMPLING_MODE": mode})
        notice = sampler_notice(settings)
        assert notice is not None and "OTEL_TRACES_SAMPLER='always_on'" in notice
        assert f"OTEL_CRM_SAMPLING_MODE={mode}" in notice
        assert head_sampler(settings).get_description() == "AlwaysOnSampler"


def test_the_development_profile_honours_an_explicit_ratio() -> None:
    development = {"OTEL_CRM_ENVIRONMENT": "development"}
    assert policy_from_settings(resolve_settings(development)).keep_all is True
    explicit = resolve_settings({**development, "OTEL_CRM_SAMPLING_RATIO": "0.2"})
    assert explicit.sampling_ratio == 0.2 and policy_from_settings(explicit).keep_all is False
    assert policy_from_settings(resolve_settings(development, sampling_ratio=0.5)).keep_all is False
