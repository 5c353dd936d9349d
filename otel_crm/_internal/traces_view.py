"""`otel-crm traces`: recent traces and one trace's waterfall in the terminal, from Jaeger's query API.

    otel-crm traces                                  # the services Jaeger knows
    otel-crm traces --service crm-api [--errors] [--slow] [--tenant acme] [--limit 20]
    otel-crm traces 4bf92f3577b34da6a3ce929d0e0e4736

Reads `GET /api/services`, `/api/traces?service=…` and `/api/traces/{id}` (Jaeger v1 JSON: µs times,
typed tags). `--errors` is filtered here, not by Jaeger: Jaeger v2.13's in-memory store compares the
`error` tag as a boolean while its API passes it a string, so `tags={"error":"true"}` matches
nothing. Everything printed passes otel_crm's scrubber (redact) and loses control characters:
the traces may come from services that do not scrub.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TextIO

from otel_crm._internal import semconv
from otel_crm._internal.scrubbing import Scrubber
from otel_crm._internal.settings import resolve_settings

__all__ = ["JaegerError", "TraceView", "add_parser", "render_list", "render_waterfall", "run"]

Span = dict[str, Any]
_TRACE_ID = re.compile(r"^[0-9a-fA-F]{1,32}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_BAR = 32


class JaegerError(Exception):
    """One line for the user: Jaeger unreachable, or it answered something we cannot use."""


def _get(base: str, path: str, params: Mapping[str, str] | None = None, timeout: float = 5.0) -> Any:
    url = base.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the user's own URL
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise JaegerError(f"Jaeger at {base} answered HTTP {exc.code} for {path}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise JaegerError(f"Jaeger at {base} is not reachable ({reason}); start it with `make stack` "
                          f"or pass --jaeger URL") from None


class TraceView:
    """One Jaeger trace with what both renderings need: spans by id, parents, root, facts."""

    def __init__(self, data: Mapping[str, Any], scrubber: Scrubber) -> None:
        self.trace_id: str = str(data.get("traceID", ""))
        self.spans: list[Span] = list(data.get("spans") or [])
        self.processes: Mapping[str, Any] = data.get("processes") or {}
        self._scrubber = scrubber
        ids = {s.get("spanID") for s in self.spans}
        self.parent: dict[str, str | None] = {}
        for span in self.spans:
            refs = [r for r in span.get("references") or [] if r.get("refType") == "CHILD_OF"]
            parent = refs[0].get("spanID") if refs else None
            self.parent[span["spanID"]] = parent if parent in ids else None
        self.start = min((int(s.get("startTime", 0)) for s in self.spans), default=0)
        self.end = max((int(s.get("startTime", 0)) + int(s.get("duration", 0)) for s in self.spans), default=0)

    @property
    def root(self) -> Span:
        roots = [s for s in self.spans if self.parent[s["spanID"]] is None] or self.spans
        return min(roots, key=lambda s: int(s.get("startTime", 0)))

    def tag(self, span: Span, key: str) -> Any:
        for tag in span.get("tags") or []:
            if tag.get("key") == key:
                return tag.get("value")
        return None

    def first_tag(self, key: str) -> Any:
        """The root's value, else the first span's that has one."""
        for span in [self.root, *self.spans]:
            value = self.tag(span, key)
            if value not in (None, ""):
                return value
        return None

    def failed(self, span: Span) -> bool:
        return self.tag(span, "error") in (True, "true") or self.tag(span, "otel.status_code") == "ERROR"

    def has_error(self) -> bool:
        return any(self.failed(s) for s in self.spans)

    def service(self, span: Span) -> str:
        return str((self.processes.get(span.get("processID", "")) or {}).get("serviceName", ""))

    def text(self, value: Any, key: str = "") -> str:
        """A value safe to print: scrubbed (by key and by content), no control characters."""
        scrubbed = self._scrubber.scrub_value(key, value) if key else self._scrubber.scrub_text(str(value))
        if isinstance(scrubbed, (list, tuple)):
            scrubbed = ",".join(map(str, scrubbed))
        return _CONTROL.sub(" ", str(scrubbed))

    def children(self) -> dict[str | None, list[Span]]:
        tree: dict[str | None, list[Span]] = {}
        for span in sorted(self.spans, key=lambda s: (int(s.get("startTime", 0)), s.get("operationName", ""))):
            tree.setdefault(self.parent[span["spanID"]], []).append(span)
        return tree


def _duration(micros: float) -> str:
    if micros >= 1_000_000:
        return f"{micros / 1e6:.3f} s"
    if micros >= 1000:
        return f"{micros / 1000:.1f} ms"
    return f"{micros:.0f} µs"


def _clock(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1e6).strftime("%Y-%m-%d %H:%M:%S")


def render_list(traces: Iterable[TraceView]) -> list[str]:
    rows = [("START", "DURATION", "SPANS", "ERROR", "TENANT", "SAMPLED", "TRACE ID", "ROOT SPAN")]
    for view in traces:
        tenant = view.first_tag(semconv.CRM_TENANT_ID)
        reason = view.first_tag(semconv.CRM_SAMPLING_REASON)
        rows.append((_clock(view.start), _duration(view.end - view.start), str(len(view.spans)),
                     "ERROR" if view.has_error() else "", view.text(tenant, semconv.CRM_TENANT_ID) if tenant else "-",
                     view.text(reason) if reason else "-", view.trace_id, view.text(view.root.get("operationName"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
            for row in rows]


def _key_attributes(view: TraceView, span: Span) -> str:
    tags = {t.get("key"): t.get("value") for t in span.get("tags") or []}
    parts: list[str] = []

    def add(label: str, key: str) -> None:
        if tags.get(key) not in (None, ""):
            parts.append(f"{label}={view.text(tags[key], key)}")

    add("route", semconv.HTTP_ROUTE)
    add("status", semconv.HTTP_RESPONSE_STATUS_CODE)
    add("tenant", semconv.CRM_TENANT_ID)
    response_model = semconv.GEN_AI_RESPONSE_MODEL in tags
    add("model", semconv.GEN_AI_RESPONSE_MODEL if response_model else semconv.GEN_AI_REQUEST_MODEL)
    if semconv.GEN_AI_USAGE_INPUT_TOKENS in tags or semconv.GEN_AI_USAGE_OUTPUT_TOKENS in tags:
        parts.append(f"tokens={tags.get(semconv.GEN_AI_USAGE_INPUT_TOKENS, '?')} in/"
                     f"{tags.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, '?')} out")
    if isinstance(tags.get(semconv.CRM_GEN_AI_COST_AMOUNT), (int, float)):
        currency = view.text(tags.get(semconv.CRM_GEN_AI_COST_CURRENCY, ""), semconv.CRM_GEN_AI_COST_CURRENCY)
        amount = f"{tags[semconv.CRM_GEN_AI_COST_AMOUNT]:.8f}".rstrip("0").rstrip(".")
        parts.append(f"cost={amount} {currency}".rstrip())
    add("db", semconv.DB_SYSTEM_NAME)
    add("op", semconv.DB_OPERATION_NAME)
    add("connector", semconv.SERVICE_PEER_NAME)
    add("records", semconv.CRM_CONNECTOR_RECORDS)
    add("error", semconv.ERROR_TYPE)
    return " ".join(parts)


def _bar(view: TraceView, span: Span, glyph: str) -> str:
    total = max(view.end - view.start, 1)
    offset = min(_BAR - 1, int((int(span.get("startTime", 0)) - view.start) * _BAR / total))
    length = max(1, min(_BAR - offset, round(int(span.get("duration", 0)) * _BAR / total)))
    return "|" + " " * offset + glyph * length + " " * (_BAR - offset - length) + "|"


def render_waterfall(view: TraceView, glyph: str = "█") -> list[str]:
    tree = view.children()
    ordered: list[tuple[int, Span]] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in tree.get(parent, []):
            ordered.append((depth, span))
            walk(span["spanID"], depth + 1)

    walk(None, 0)
    names = ["  " * depth + view.text(span.get("operationName", "")) for depth, span in ordered]
    width = min(max((len(n) for n in names), default=10), 56)
    tenant = view.first_tag(semconv.CRM_TENANT_ID)
    count = len(view.spans)
    header = (f"trace {view.trace_id}  {view.text(view.service(view.root))}  {_duration(view.end - view.start)}  "
              f"{count} span{'s' if count != 1 else ''}")
    if tenant:
        header += f"  tenant={view.text(tenant, semconv.CRM_TENANT_ID)}"
    lines = [header]
    for name, (_, span) in zip(names, ordered, strict=True):
        status = "ERROR" if view.failed(span) else "ok"
        line = (f"{name[:width].ljust(width)}  {_duration(int(span.get('duration', 0))):>10}  "
                f"{_bar(view, span, glyph)}  {status:<5}  {_key_attributes(view, span)}")
        lines.append(line.rstrip())
    return lines


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("traces", help="recent traces, or one trace as a waterfall, from Jaeger")
    parser.add_argument("trace_id", nargs="?", help="render this trace as a waterfall")
    parser.add_argument("--service", help="list this service's recent traces")
    parser.add_argument("--errors", action="store_true", help="only traces with an error span")
    parser.add_argument("--slow", action="store_true",
                        help="only traces at least as long as OTEL_CRM_SAMPLING_SLOW_SECONDS (2 s)")
    parser.add_argument("--tenant", help="only traces of this tenant (crm.tenant.id)")
    parser.add_argument("--limit", type=int, default=20, help="at most this many traces (default 20)")
    parser.add_argument("--lookback", type=float, default=3600.0, help="seconds back to search (default 3600)")
    parser.add_argument("--jaeger", help="Jaeger query URL (default OTEL_CRM_JAEGER_URL or http://127.0.0.1:16686)")


def _glyph(out: TextIO) -> str:
    try:
        "█".encode(getattr(out, "encoding", None) or "ascii")
        return "█"
    except (UnicodeEncodeError, LookupError):
        return "#"


def run(args: argparse.Namespace, out: TextIO | None = None, environ: Mapping[str, str] | None = None) -> int:
    out = out or sys.stdout
    settings = resolve_settings(environ)
    base = args.jaeger or settings.jaeger_url
    scrubber = Scrubber(mode="redact")
    try:
        if args.trace_id:
            if not _TRACE_ID.match(args.trace_id):
                raise JaegerError(f"{args.trace_id[:40]!r} is not a trace id (up to 32 hex digits)")
            data = _get(base, f"/api/traces/{args.trace_id.lower()}")
            traces = (data or {}).get("data") or []
            if not traces or not traces[0].get("spans"):
                raise JaegerError(f"trace {args.trace_id} is not in Jaeger at {base}")
            print("\n".join(render_waterfall(TraceView(traces[0], scrubber), _glyph(out))), file=out)
            return 0
        if not args.service:
            services = sorted(((_get(base, "/api/services") or {}).get("data")) or [])
            print("services in Jaeger: " + (", ".join(services) or "none yet"), file=out)
            print("list one with: otel-crm traces --service NAME", file=out)
            return 0
        now = int(time.time() * 1e6)
        limit = max(1, args.limit)
        params = {"service": args.service, "start": str(now - int(args.lookback * 1e6)), "end": str(now),
                  # --errors filters here, so ask Jaeger (newest first) for more than we show.
                  "limit": str(max(limit, min(limit * 10, 1000)) if args.errors else limit)}
        if args.slow:
            params["minDuration"] = f"{settings.sampling_slow_seconds}s"
        if args.tenant:
            params["tags"] = json.dumps({semconv.CRM_TENANT_ID: args.tenant})
        found = [TraceView(t, scrubber) for t in ((_get(base, "/api/traces", params) or {}).get("data") or [])]
        if args.errors:
            found = [v for v in found if v.has_error()]
        found = sorted(found, key=lambda v: v.start, reverse=True)[:limit]
        if not found:
            print(f"no traces for service {args.service!r} in the last {args.lookback:g} s with these filters",
                  file=out)
            return 0
        print("\n".join(render_list(found)), file=out)
        return 0
    except JaegerError as exc:
        print(f"otel-crm traces: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `otel-crm traces … | head`: the reader is gone, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0
