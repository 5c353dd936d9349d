"""Rendering of Jaeger traces (pure functions over Jaeger's v1 JSON). The HTTP side runs against the
real Jaeger in tests/e2e/test_traces_command.py."""

from __future__ import annotations

import io
import socket
from typing import Any

import pytest

from otel_crm._internal.scrubbing import Scrubber
from otel_crm._internal.traces_view import TraceView, render_list, render_waterfall
from otel_crm.cli import main

T0 = 1_764_000_000_000_000  # µs


def _tag(key: str, value: Any) -> dict[str, Any]:
    kind = {bool: "bool", int: "int64", float: "float64"}.get(type(value), "string")
    return {"key": key, "type": kind, "value": value}


def _span(span_id: str, name: str, start: int, duration: int, parent: str | None = None, **tags: Any) -> dict[str, Any]:
    return {"traceID": "ab" * 16, "spanID": span_id, "operationName": name, "startTime": T0 + start,
            "duration": duration, "processID": "p1",
            "references": [{"refType": "CHILD_OF", "traceID": "ab" * 16, "spanID": parent}] if parent else [],
            "tags": [_tag(k.replace("__", "."), v) for k, v in tags.items()]}


def _trace(*spans: dict[str, Any]) -> TraceView:
    return TraceView({"traceID": "ab" * 16, "spans": list(spans),
                      "processes": {"p1": {"serviceName": "crm-api", "tags": []}}}, Scrubber(mode="redact"))


SLOW = _trace(
    _span("01", "GET /slow", 0, 2_200_000, None, http__route="/slow", http__response__status_code=200,
          crm__tenant__id="initech", crm__sampling__reason="slow"),
    _span("02", "chat gpt-4o", 100_000, 1_000_000, "01", gen_ai__request__model="gpt-4o",
          gen_ai__response__model="gpt-4o-2024-08-06", gen_ai__usage__input_tokens=812,
          gen_ai__usage__output_tokens=95, crm__gen_ai__cost__amount=0.00298, crm__gen_ai__cost__currency="USD"),
    _span("03", "SELECT crm.leads", 1_200_000, 900, "01", db__system__name="sqlite", db__operation__name="SELECT"),
    _span("04", "sync hubspot", 1_300_000, 800_000, "01", service__peer__name="hubspot", crm__connector__records=2,
          error=True, otel__status_code="ERROR", error__type="TimeoutError"),
)


def test_waterfall_shows_tree_durations_bars_status_and_key_attributes() -> None:
    lines = render_waterfall(SLOW, glyph="#")
    assert lines[0] == f"trace {'ab' * 16}  crm-api  2.200 s  4 spans  tenant=initech"
    root, chat, select, sync = lines[1:]
    assert root.startswith("GET /slow") and "2.200 s" in root and "|" + "#" * 32 + "|" in root
    assert "ok" in root and "route=/slow status=200 tenant=initech" in root
    assert chat.startswith("  chat gpt-4o") and "1.000 s" in chat
    assert "model=gpt-4o-2024-08-06 tokens=812 in/95 out cost=0.00298 USD" in chat
    assert select.startswith("  SELECT crm.leads") and "900 µs" in select and "db=sqlite op=SELECT" in select
    assert sync.startswith("  sync hubspot") and "ERROR" in sync and "connector=hubspot records=2" in sync
    assert "error=TimeoutError" in sync
    # One time axis: the chat span starts at 100 ms of 2.2 s, so one cell in, 15 cells long.
    assert "| " + "#" * 15 + " " in chat
    # The sync span starts at 1.3 s of 2.2 s: 19 cells in.
    assert "|" + " " * 18 + "#" in sync


def test_list_has_one_line_per_trace_with_the_promised_columns() -> None:
    ok = _trace(_span("11", "GET /ok", 0, 1500, None, crm__sampling__reason="ratio"))
    header, slow_line, ok_line = render_list([SLOW, ok])
    assert header.split() == ["START", "DURATION", "SPANS", "ERROR", "TENANT", "SAMPLED", "TRACE", "ID", "ROOT", "SPAN"]
    assert slow_line.split()[2:8] == ["2.200", "s", "4", "ERROR", "initech", "slow"]
    assert slow_line.endswith("  GET /slow") and "ab" * 16 in slow_line
    assert ok_line.split()[2:7] == ["1.5", "ms", "1", "-", "ratio"]


def test_nothing_sensitive_or_control_characters_are_printed() -> None:
    leaky = _trace(_span("21", "GET /users/jane@example.com\x1b[31m", 0, 10, None,
                         http__route="/login?token=s3cr3t", authorization="Bearer s3cr3t",
                         crm__tenant__id="acme"))
    text = "\n".join(render_waterfall(leaky) + render_list([leaky]))
    assert "jane@example.com" not in text and "s3cr3t" not in text and "\x1b" not in text
    assert "[REDACTED:email]" in text


def test_span_whose_parent_is_elsewhere_is_a_root() -> None:
    view = _trace(_span("31", "GET /downstream", 0, 100, "ffffffffffffffff", crm__gen_ai__cost__amount=0.0000093))
    assert view.root["spanID"] == "31"
    header, line = render_waterfall(view)
    assert header.endswith("  1 span") and line.startswith("GET /downstream")
    assert "cost=0.0000093" in line  # never 9.3e-06


def test_unreachable_jaeger_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for argv in (["traces", "--service", "crm-api"], ["traces", "ab" * 16], ["traces"]):
        assert main([*argv, "--jaeger", f"http://127.0.0.1:{port}"]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.count("\n") == 1 and f"Jaeger at http://127.0.0.1:{port} is not reachable" in captured.err


def test_a_malformed_trace_id_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["traces", "not-a-trace", "--jaeger", "http://127.0.0.1:9"]) == 1
    assert capsys.readouterr().err == "otel-crm traces: 'not-a-trace' is not a trace id (up to 32 hex digits)\n"


def test_ascii_fallback_for_terminals_without_unicode() -> None:
    from otel_crm._internal.traces_view import _glyph

    assert _glyph(io.TextIOWrapper(io.BytesIO(), encoding="ascii")) == "#"
    assert _glyph(io.TextIOWrapper(io.BytesIO(), encoding="utf-8")) == "█"
