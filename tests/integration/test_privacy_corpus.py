"""The privacy corpus end to end: every kind of secret in tests/support/privacy_corpus.py, sent
through every place a real app puts request data, under the real `opentelemetry-instrument`,
exported to the real collector. None may reach the collector's files or the app's stdout; the
allow-listed deal id must.

The places (14): the URL path (an unmatched route, so also the operation on the RED metrics), the
query string sent plain and percent-encoded (`requests` params), a captured request header, a span
attribute and a span event set by user code, an exception's message and stack trace, a log
message, a log ``extra=`` field, ``db.query.text`` (SQLAlchemy, the secret as a literal), a metric
attribute via the tenant (X-Tenant-ID) and via a helper's operation name (a workflow named after
it), and the JSON lines on stdout. The app is the Flask example with its test-only
``/privacy-probe`` (CRM_TEST_ENDPOINTS=1).

Every place is also checked to have reached telemetry for every kind (a probe that never got there
cannot pass), and a negative control with scrubbing off finds the same secrets in every place.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus

import pytest
import requests

from tests.conftest import App, Collector, flask_app, instrumented_env, wait_until
from tests.support.otlp_files import Span
from tests.support.privacy_corpus import ALLOW_ENV, ALLOW_KEYS, CORPUS, DEAL_ID, Secret

pytestmark = pytest.mark.integration

PLACES = ("url-path", "query-plain", "query-encoded", "request-header", "span-attribute", "span-event",
          "exception-message", "stack-trace", "log-message", "log-extra", "db-query-text",
          "metric-via-tenant", "metric-via-operation", "stdout-json")
ALLOWED_TEXT = f"deal DEAL-{DEAL_ID} won"
CAPTURED = "X-Probe-Note,X-Probe-Kind,X-Probe-Request,X-Tenant-ID"


def _header_safe(text: str) -> str:
    """A header value cannot hold a line break: the PEM kinds travel with spaces instead (their
    must-not-appear substrings are single lines, so the check is the same)."""
    return " ".join(text.split("\n")).strip()


def _plain(text: str) -> str:
    """The text in a URL as written: only what HTTP cannot carry is escaped (space, CR/LF, `#`);
    existing percent-escapes, `+`, `@`, `:` and `/` travel as they are."""
    return text.replace("#", "%23").replace(" ", "%20").replace("\n", "%0A").replace("\r", "%0D")


def _path_of(text: str) -> str:
    """An unmatched path: the text itself when it is a path (its query string included),
    otherwise under /no-such-route/."""
    return _plain(text) if text.startswith("/") else "/no-such-route/" + _plain(text)


def _requests_for(text: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(request name, method, request spec) sending `text` through every place."""
    header = _header_safe(text)
    return [
        ("path", "GET", {"path": _path_of(text),
                         "headers": {"X-Probe-Note": header, "X-Tenant-ID": header}}),
        ("query-plain", "GET", {"path": "/privacy-probe?note=" + _plain(text)}),
        ("query-encoded", "GET", {"path": "/privacy-probe", "params": {"note": text}}),
        ("probe", "POST", {"path": "/privacy-probe", "json": {"text": text}}),
    ]


def _send(app: App, session: requests.Session, job: tuple[str, str, str, dict[str, Any]]) -> int:
    tag, name, method, spec = job
    headers = {"X-Probe-Kind": tag, "X-Probe-Request": name, **spec.get("headers", {})}
    response = session.request(method, app.url(spec["path"]), params=spec.get("params"), json=spec.get("json"),
                               headers=headers, timeout=30)
    return response.status_code


def _send_all(app: App, kinds: list[tuple[int, str]]) -> None:
    jobs = []
    for index, text in kinds:
        jobs.extend((f"k{index}", name, method, spec) for name, method, spec in _requests_for(text))

    def run(chunk: list[tuple[str, str, str, dict[str, Any]]]) -> list[tuple[str, str, int]]:
        with requests.Session() as session:
            return [(job[0], job[1], _send(app, session, job)) for job in chunk]

    with ThreadPoolExecutor(4) as pool:
        results = [r for chunk in pool.map(run, [jobs[i::4] for i in range(4)]) for r in chunk]
    expected = {"path": 404, "query-plain": 200, "query-encoded": 200, "probe": 500}
    wrong = [(tag, name, status) for tag, name, status in results if status != expected[name]]
    assert not wrong, wrong


# --- what came out -------------------------------------------------------------------------------

def _strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON document, keys included — except what the allow-list lets
    through on purpose (the deal id, a card to the patterns: its key's value and its pattern)."""
    if isinstance(value, str):
        yield value.replace(f"DEAL-{DEAL_ID}", "DEAL-(allowed)")
    elif isinstance(value, dict) and value.get("key") in ALLOW_KEYS:
        return
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _views(text: str) -> set[str]:
    """`text` and its percent-decoded readings (once, twice, `+` as space): a secret that left
    encoded is still a leak."""
    views = {text}
    if "%" in text or "+" in text:
        for once in (unquote(text), unquote_plus(text)):
            views.add(once)
            views.add(unquote(once))
    return views


def _leaks_in(strings: list[str], secrets: tuple[Secret, ...]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    views = [view for s in strings for view in _views(s)]
    for secret in secrets:
        for part in secret.must_not_appear:
            if any(part in view for view in views):
                found.setdefault(secret.kind, []).append(part)
    return found


def _file_strings(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [s for line in path.read_text().splitlines() if line.strip() for s in _strings(json.loads(line))]


def _stdout_json(app: App) -> list[dict[str, Any]]:
    lines = []
    for line in app.process.output().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def _tag(span: Span) -> tuple[str, str] | None:
    kind = span.attributes.get("http.request.header.x_probe_kind")
    name = span.attributes.get("http.request.header.x_probe_request")
    if not kind or not name:
        return None
    return kind[0], name[0]


def _url_parts(span: Span) -> list[str]:
    keys = ("url.path", "url.query", "http.target", "http.url", "url.full")
    return [str(span.attributes[k]) for k in keys if k in span.attributes]


def _query_text(span: Span) -> str:
    return str(span.attributes.get("db.query.text", span.attributes.get("db.statement", "")))


def _place_values(collector: Collector, stdout: list[dict[str, Any]],
                  tags: list[str]) -> dict[tuple[str, str], list[str]]:
    """For each (kind tag, place): the strings that place produced in the output."""
    spans = collector.spans()
    logs = collector.logs()
    points = collector.metrics()
    server = {_tag(s): s for s in spans if _tag(s) is not None}
    by_trace: dict[str, list[Span]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    values: dict[tuple[str, str], list[str]] = {}
    tenants = {str(p.attributes["crm.tenant.id"]) for p in points
               if p.metric == "crm.requests" and "crm.tenant.id" in p.attributes}
    workflows = {str(p.attributes["crm.workflow.name"]) for p in points if "crm.workflow.name" in p.attributes}
    for tag in tags:
        def put(place: str, found: list[str], tag: str = tag) -> None:
            values.setdefault((tag, place), []).extend(v for v in found if v)

        path_span, plain, encoded, probe = (server.get((tag, n))
                                            for n in ("path", "query-plain", "query-encoded", "probe"))
        if path_span is not None:
            put("url-path", _url_parts(path_span))
            put("request-header", [str(v) for v in path_span.attributes.get("http.request.header.x_probe_note", [])])
            tenant = path_span.attributes.get("crm.tenant.id")
            # the metric carries the span's one outgoing form of the tenant
            put("metric-via-tenant", [str(tenant)] if tenant is not None and str(tenant) in tenants else [])
        if plain is not None:
            put("query-plain", [str(plain.attributes.get("url.query", plain.attributes.get("http.target", "")))])
        if encoded is not None:
            put("query-encoded", [str(encoded.attributes.get("url.query",
                                                             encoded.attributes.get("http.target", "")))])
        traces = {s.trace_id for s in (path_span, plain, encoded, probe) if s is not None}
        put("stdout-json", [json.dumps(line) for line in stdout if line.get("correlation_id") in traces])
        if probe is None:
            continue
        put("span-attribute", [str(probe.attributes.get("crm.probe.note", ""))])
        events = probe.events
        put("span-event", [str(e["attributes"].get("probe.detail", "")) for e in events if e["name"] == "probe.event"])
        exceptions = [e["attributes"] for e in events if e["name"] == "exception"]
        put("exception-message", [str(a.get("exception.message", "")) for a in exceptions])
        put("stack-trace", [str(a.get("exception.stacktrace", "")) for a in exceptions])
        family = by_trace.get(probe.trace_id, [])
        put("db-query-text", [_query_text(s) for s in family if "FROM leads WHERE company" in _query_text(s)])
        workflow_names = [str(s.attributes.get("crm.workflow.name", "")) for s in family
                          if s.name.startswith("execute_workflow")]
        put("metric-via-operation", [w for w in workflow_names if w in workflows])
        records = [r for r in logs if r.trace_id == probe.trace_id]
        put("log-message", [str(r.body) for r in records if str(r.body).startswith("probe note:")])
        put("log-extra", [str(r.attributes.get("probe_detail", "")) for r in records])
    return values


def _run_corpus(collector: Collector, tmp_path: Path, secrets: tuple[Secret, ...], **env: str) -> tuple[
        App, dict[tuple[str, str], list[str]], dict[str, str]]:
    app = flask_app(tmp_path, instrumented_env(
        collector, "flask-crm", OTEL_CRM_SAMPLING_MODE="off", CRM_TEST_ENDPOINTS="1",
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=CAPTURED, **ALLOW_ENV, **env))
    kinds = list(enumerate(s.text for s in secrets))
    _send_all(app, kinds)
    # the allow-listed deal id: by key on a span attribute, by pattern through the probe's places
    response = requests.post(app.url("/privacy-probe"), json={"text": ALLOWED_TEXT, "deal_id": DEAL_ID},
                             headers={"X-Probe-Kind": "allowed", "X-Probe-Request": "probe"}, timeout=30)
    assert response.status_code == 500
    tags = [f"k{i}" for i, _ in kinds]
    expected_probe_spans = len(tags) * 4 + 1
    app.process.stop()  # flushes every signal

    def complete() -> bool:
        spans = collector.spans()
        if sum(1 for s in spans if _tag(s) is not None) < expected_probe_spans:
            return False
        if sum(1 for r in collector.logs() if str(r.body).startswith("probe note:")) < len(tags) + 1:
            return False
        # The final metric export (at exit) carries every workflow and tenant the spans carry: an
        # earlier periodic export in the file is not enough (seen under CI load).
        points = collector.metrics()
        workflows = {str(s.attributes["crm.workflow.name"]) for s in spans
                     if s.name.startswith("execute_workflow") and "crm.workflow.name" in s.attributes}
        tenants = {str(s.attributes["crm.tenant.id"]) for s in spans
                   if (_tag(s) or ("", ""))[1] == "path" and "crm.tenant.id" in s.attributes}
        exported = {str(p.attributes.get(key)) for p in points
                    for key in ("crm.workflow.name", "crm.tenant.id") if key in p.attributes}
        return workflows <= exported and tenants <= exported

    wait_until(complete, 30, "every probe's spans, log records and metrics in the collector's files")
    stdout = _stdout_json(app)
    kinds_by_tag = {t: s.kind for t, s in zip(tags, secrets, strict=True)}
    return app, _place_values(collector, stdout, [*tags, "allowed"]), kinds_by_tag


@pytest.mark.parametrize("mode", ["redact", "hash"])
def test_no_kind_of_secret_leaves_through_any_place(collector: Collector, tmp_path: Path, mode: str) -> None:
    started = time.monotonic()
    app, values, kinds = _run_corpus(collector, tmp_path, CORPUS, OTEL_CRM_SCRUB_MODE=mode)
    sent = time.monotonic() - started
    # Every place reached telemetry for every kind (scrubbed or not, it is there).
    missing = [(kinds[tag], place) for tag in kinds for place in PLACES if not values.get((tag, place))]
    assert not missing, f"{len(missing)} (kind, place) pairs never reached telemetry: {missing[:20]}"
    # Per place: which kinds leaked there.
    by_secret = {s.kind: s for s in CORPUS}
    leaks = {(kinds[tag], place): parts for tag in kinds for place in PLACES
             for parts in [_leaks_in(values[(tag, place)], (by_secret[kinds[tag]],)).get(kinds[tag])] if parts}
    assert not leaks, f"{len(leaks)} of {len(kinds) * len(PLACES)} (kind, place) pairs leak: {leaks}"
    # And nowhere else either: every string of every file the collector wrote, and every stdout line.
    for name in ("traces.jsonl", "logs.jsonl", "metrics.jsonl"):
        found = _leaks_in(_file_strings(collector.output / name), CORPUS)
        assert not found, f"{name} leaks {found}"
    stdout_strings = [s for line in _stdout_json(app) for s in _strings(line)]
    assert stdout_strings
    found = _leaks_in(stdout_strings, CORPUS)
    assert not found, f"stdout JSON leaks {found}"
    # The allow-listed deal id does arrive: by key, and by pattern in every free-text place.
    allowed_places = ("span-attribute", "span-event", "exception-message", "stack-trace", "log-message",
                      "log-extra", "stdout-json")
    not_kept = [p for p in allowed_places if not any(f"DEAL-{DEAL_ID}" in v for v in values[("allowed", p)])]
    assert not not_kept, not_kept
    deal = next(s for s in collector.spans() if _tag(s) == ("allowed", "probe"))
    assert deal.attributes["crm.deal.id"] == DEAL_ID
    print(f"\ncorpus ({mode}): {len(kinds)} kinds x {len(PLACES)} places = {len(kinds) * len(PLACES)} pairs, "
          f"0 leaks; sent and collected in {sent:.1f}s")


CONTROL = tuple(s for s in CORPUS if s.kind in {"email", "card-plain", "bearer", "userinfo-postgres"})


def test_control_with_scrubbing_off_every_place_leaks(collector: Collector, tmp_path: Path) -> None:
    """The negative control: the same probes with OTEL_CRM_SCRUB_MODE=off and SQL literals kept
    put each secret into every place, so the test above is not passing vacuously."""
    _, values, kinds = _run_corpus(collector, tmp_path, CONTROL, OTEL_CRM_SCRUB_MODE="off",
                                   OTEL_CRM_CAPTURE_DB_LITERALS="true")
    by_secret = {s.kind: s for s in CONTROL}
    silent = [(kinds[tag], place) for tag in kinds for place in PLACES
              if not _leaks_in(values.get((tag, place), []), (by_secret[kinds[tag]],))]
    assert not silent, f"with scrubbing off these places carried no secret: {silent}"
