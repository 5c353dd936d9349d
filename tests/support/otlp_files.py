"""Read the collector's `file` exporter output (OTLP/JSON, one request per line) into flat dicts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DataPoint", "LogRecord", "Span", "read_logs", "read_metrics", "read_spans"]


def _value(value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _attrs(value["kvlistValue"].get("values", []))
    return None


def _attrs(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items or []}


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    text = path.read_text()
    for raw in text.splitlines(keepends=True):
        if not raw.strip():
            continue
        if not raw.endswith("\n"):
            break  # the collector is still writing this line: the next poll will see it whole
        out.append(json.loads(raw))
    return out


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def read_spans(path: Path) -> list[Span]:
    spans = []
    for request in _lines(path):
        for rs in request.get("resourceSpans", []):
            resource = _attrs(rs.get("resource", {}).get("attributes"))
            for ss in rs.get("scopeSpans", []):
                scope = ss.get("scope", {}).get("name", "")
                for s in ss.get("spans", []):
                    spans.append(Span(
                        trace_id=s["traceId"], span_id=s["spanId"], parent_span_id=s.get("parentSpanId", ""),
                        name=s["name"], kind=int(s.get("kind", 0)), start_ns=int(s["startTimeUnixNano"]),
                        end_ns=int(s["endTimeUnixNano"]), status_code=int(s.get("status", {}).get("code", 0)),
                        attributes=_attrs(s.get("attributes")), resource=resource, scope=scope,
                        events=[{"name": e.get("name"), "attributes": _attrs(e.get("attributes"))}
                                for e in s.get("events", [])]))
    return spans


@dataclass
class DataPoint:
    metric: str
    unit: str
    kind: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    value: float | None = None
    count: int | None = None
    bounds: list[float] = field(default_factory=list)


def read_metrics(path: Path) -> list[DataPoint]:
    points = []
    for request in _lines(path):
        for rm in request.get("resourceMetrics", []):
            resource = _attrs(rm.get("resource", {}).get("attributes"))
            for sm in rm.get("scopeMetrics", []):
                for m in sm.get("metrics", []):
                    for kind in ("sum", "gauge", "histogram"):
                        if kind not in m:
                            continue
                        for dp in m[kind].get("dataPoints", []):
                            value = dp.get("asDouble", dp.get("asInt"))
                            points.append(DataPoint(
                                metric=m["name"], unit=m.get("unit", ""), kind=kind,
                                attributes=_attrs(dp.get("attributes")), resource=resource,
                                value=float(value) if value is not None else None,
                                count=int(dp["count"]) if "count" in dp else None,
                                bounds=[float(b) for b in dp.get("explicitBounds", [])]))
    return points


@dataclass
class LogRecord:
    body: Any
    severity: str
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    event_name: str = ""


def read_logs(path: Path) -> list[LogRecord]:
    records = []
    for request in _lines(path):
        for rl in request.get("resourceLogs", []):
            resource = _attrs(rl.get("resource", {}).get("attributes"))
            for sl in rl.get("scopeLogs", []):
                for r in sl.get("logRecords", []):
                    records.append(LogRecord(
                        body=_value(r.get("body", {})), severity=r.get("severityText", ""),
                        trace_id=r.get("traceId", ""), span_id=r.get("spanId", ""),
                        attributes=_attrs(r.get("attributes")), resource=resource,
                        event_name=r.get("eventName", "")))
    return records
