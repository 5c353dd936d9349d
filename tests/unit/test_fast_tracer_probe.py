"""fast_tracer_probe: the start-up probe passes on the pinned SDK and fails on each kind of
difference it is there to catch (the fallback and its warning: tests/unit/test_fast_tracer.py)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk import trace as sdk

from otel_crm._internal import fast_span, fast_tracer, fast_tracer_probe
from otel_crm._internal.memo import Memo


def test_the_pinned_sdk_passes() -> None:
    assert fast_tracer_probe.same_spans() is True


def test_a_mutable_span_after_end_fails_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk.Span, "update_name", lambda self, name: setattr(self, "_name", name))
    assert fast_tracer_probe.same_spans() is False


def test_a_hook_wrongly_skipped_fails_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_span, "does_nothing", lambda processor, hook: True)
    monkeypatch.setattr(fast_span, "_last", [((), (), (), ())])
    monkeypatch.setattr(fast_span, "_plans", Memo(64))
    assert fast_tracer_probe.same_spans() is False


def test_a_container_with_another_field_fails_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    new_attributes = fast_span.new_attributes

    def extra_field(*args: Any) -> Any:
        made = new_attributes(*args)
        made.extra = 1
        return made

    monkeypatch.setattr(fast_tracer, "new_attributes", extra_field)
    assert fast_tracer_probe.same_spans() is False
