"""Regenerate tests/data/deviations.json: real spans, metrics and resources showing the installed
instrumentations' deviations from the semantic conventions, the fixtures of test_corrections.py.

    .venv/bin/python tests/data/capture_deviations.py      (needs `make collector`)

Runs examples/flask_crm and examples/django_crm under the real `opentelemetry-instrument`, exporting
to the real collector's file exporter, sends a few requests (a routed one, unrouted 404s, a
failure) and keeps, verbatim in OTLP/JSON, one item per deviation (and the compliant counterpart
where one exists, so a correction is shown to leave it alone).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import (  # noqa: E402 - the repository root must be importable first
    django_app,
    flask_app,
    instrumented_env,
    start_file_collector,
    wait_until,
)

__all__ = ["main"]

OUT = Path(__file__).with_name("deviations.json")
Item = dict[str, Any]


def _value(value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    return int(value["intValue"]) if "intValue" in value else None


def _attrs(item: Item) -> dict[str, Any]:
    return {a["key"]: _value(a["value"]) for a in item.get("attributes", [])}


def _spans(path: Path) -> Iterator[tuple[Item, Item, Item]]:
    for line in path.read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    yield resource_spans["resource"], scope_spans["scope"], span


def _metrics(path: Path) -> Iterator[tuple[Item, Item, Item]]:
    for line in path.read_text().splitlines():
        for resource_metrics in json.loads(line)["resourceMetrics"]:
            for scope_metrics in resource_metrics["scopeMetrics"]:
                for metric in scope_metrics["metrics"]:
                    yield resource_metrics["resource"], scope_metrics["scope"], metric


def _first(items: Iterator[tuple[Item, Item, Item]], what: str, match: Callable[[Item, Item], bool]) -> Item:
    for resource, scope, item in items:
        if match(scope, item):
            return {"resource": resource, "scope": scope, "item": item}
    raise LookupError(f"no {what} in the capture")


def _traffic(base: str) -> None:
    lead = requests.post(f"{base}/leads", json={"name": "Ada", "email": "ada@example.com"}, timeout=10).json()
    requests.get(f"{base}/leads/{lead['id']}", timeout=10)
    requests.get(f"{base}/missing/page", timeout=10)
    requests.get(f"{base}/fail", timeout=10)


def _capture(name: str, work: Path) -> Path:
    collector = start_file_collector(work)
    try:
        env = instrumented_env(collector, f"{name}-crm", OTEL_CRM_SAMPLING_MODE="off")
        if name == "flask":
            env["CRM_DB_URL"] = f"sqlite:///{work}/crm.db"  # a file database: db.namespace is its path
            app = flask_app(work, env)
        else:
            app = django_app(work, env)
        _traffic(app.url(""))
        time.sleep(1.0)  # one more metric export interval (500 ms) with the pool in use
        app.process.stop()
        traces = collector.output / "traces.jsonl"
        wait_until(lambda: traces.exists() and '"intValue":"404"' in traces.read_text(), 20,
                   f"{name}'s 404 span")
        time.sleep(0.5)
    finally:
        collector.process.stop()
    return collector.output


def _server(status: int, routed: bool) -> Callable[[Item, Item], bool]:
    def match(scope: Item, span: Item) -> bool:
        attributes = _attrs(span)
        return (span["kind"] == 2 and attributes.get("http.response.status_code") == status
                and ("http.route" in attributes) == routed)
    return match


def main() -> int:
    fixtures: dict[str, Item] = {}
    with tempfile.TemporaryDirectory(prefix="otel-crm-capture-") as tmp:
        flask = _capture("flask", Path(tmp) / "flask")
        django = _capture("django", Path(tmp) / "django")
        flask_spans = lambda: _spans(flask / "traces.jsonl")  # noqa: E731
        django_spans = lambda: _spans(django / "traces.jsonl")  # noqa: E731
        fixtures["flask_unrouted_server_span"] = _first(flask_spans(), "unrouted flask span", _server(404, False))
        fixtures["flask_routed_server_span"] = _first(flask_spans(), "routed flask span", _server(200, True))
        fixtures["django_unrouted_server_span"] = _first(django_spans(), "unrouted django span",
                                                         _server(404, False))
        fixtures["flask_exception_span"] = _first(
            flask_spans(), "flask span with an exception event", lambda s, span: bool(span.get("events")))
        fixtures["django_exception_span"] = _first(
            django_spans(), "django span with an exception event", lambda s, span: bool(span.get("events")))
        sqlalchemy = "opentelemetry.instrumentation.sqlalchemy"
        fixtures["sqlalchemy_select_span"] = _first(
            flask_spans(), "SQLAlchemy SELECT span",
            lambda scope, span: scope["name"] == sqlalchemy and span["name"].startswith("SELECT"))
        fixtures["sqlalchemy_connect_span"] = _first(
            flask_spans(), "SQLAlchemy connect span",
            lambda scope, span: scope["name"] == sqlalchemy and span["name"] == "connect")
        fixtures["django_db_span"] = _first(
            django_spans(), "otel_crm's Django database span",
            lambda scope, span: "db.operation.name" in _attrs(span))
        fixtures["sqlalchemy_pool_metric"] = _first(
            _metrics(flask / "metrics.jsonl"), "db.client.connections.usage",
            lambda scope, metric: metric["name"] == "db.client.connections.usage")
    scopes = sorted({f"{f['scope']['name']} {f['scope'].get('version', '')}".strip() for f in fixtures.values()})
    document = {
        "captured": {"at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "how": "tests/data/capture_deviations.py: examples under opentelemetry-instrument -> "
                            "otelcol-crm file exporter (OTLP/JSON), items kept verbatim",
                     "scopes": scopes},
        "fixtures": fixtures,
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {OUT}: {', '.join(fixtures)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
