"""Corrections of the installed instrumentations' known deviations from the semantic conventions.

Each deviation was reproduced under the real ``opentelemetry-instrument`` (fixtures:
tests/data/deviations.json; table: docs/semconv.md). The corrections are pure functions: they take
what they correct and return the corrected value, or None when there is nothing to correct (the
common case, so a caller keeps the original object and pays one dict lookup or two).

- HTTP server span with no ``http.route`` named after the raw path (Flask: ``GET /missing/page``):
  ``{method}`` — the HTTP rule (``HTTP`` for ``_OTHER``); :func:`operation_name` keeps the raw path
  out of ``crm.operation.name`` too.
- ``db.operation.name`` holding the span name (SQLAlchemy: ``SELECT /path/crm.db``): the operation.
- SQLAlchemy's ``connect`` span (no operation): named ``{target}`` per the database rule.
- ``server.address`` with the port in it (WSGI ``Host`` header: ``127.0.0.1:5000``): the host alone.
- ``exception.escaped`` (deprecated; the SDK writes it as 'True'/'False') dropped from exception events.
- ``db.client.connections.usage`` ({connections}, ``pool.name``, ``state``): recorded as
  ``db.client.connection.count`` ({connection}, ``db.client.connection.pool.name``,
  ``db.client.connection.state``) by :class:`CorrectingMeterProvider`; an SDK View cannot rename
  attributes nor the unit, so :func:`deprecated_pool_metric_view` can only drop it.
- ``host.arch``: :func:`host_arch` maps ``platform.machine()`` (``x86_64``) to the registry (``amd64``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.metrics import Meter, MeterProvider
from opentelemetry.sdk.metrics.view import DropAggregation, View
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from otel_crm._internal import semconv
from otel_crm._internal.fast_histogram import fast_histogram
from otel_crm._internal.local_sums import local_up_down_counter
from otel_crm._internal.runtime import current_runtime
from otel_crm._internal.sdk_compat import attributes_dict, span_parts

__all__ = [
    "CorrectingMeterProvider",
    "SpanCorrection",
    "connection_count_attributes",
    "correct_event",
    "correct_readable_span",
    "correct_resource_attributes",
    "correct_span",
    "deprecated_pool_metric_view",
    "host_arch",
    "http_method_placeholder",
    "operation_name",
    "with_dropped",
    "with_dropped_list",
]

# Deprecated or non-registry names the installed instrumentations write (inputs, never outputs).
EXCEPTION_ESCAPED: Final = "exception.escaped"
OLD_HTTP_METHOD: Final = "http.method"
DB_CLIENT_CONNECTIONS_USAGE: Final = "db.client.connections.usage"
POOL_NAME: Final = "pool.name"
STATE: Final = "state"
CONNECTION_COUNT_DESCRIPTION: Final = ("The number of connections that are currently in state described by the "
                                       "`state` attribute.")

Attributes = Mapping[str, AttributeValue]
_DB_KINDS: Final = (SpanKind.CLIENT, SpanKind.INTERNAL)  # database client spans (INTERNAL: in-memory ones)

# platform.machine() spellings -> registry host.arch values (v1.44: amd64, arm32, arm64, ia64, ppc32,
# ppc64, s390x, x86). Unknown spellings are kept, lowercased.
_ARCH: Final[Mapping[str, str]] = {
    "x86_64": "amd64", "amd64": "amd64", "x64": "amd64",
    "aarch64": "arm64", "arm64": "arm64", "aarch64_be": "arm64", "armv8l": "arm64",
    "i386": "x86", "i486": "x86", "i586": "x86", "i686": "x86", "x86": "x86",
    "armv6l": "arm32", "armv7l": "arm32", "armv7": "arm32", "arm": "arm32", "armhf": "arm32",
    "ppc64": "ppc64", "ppc64le": "ppc64", "ppc": "ppc32", "ppcle": "ppc32",
    "s390x": "s390x", "ia64": "ia64",
}


def host_arch(machine: str) -> str:
    """The registry's ``host.arch`` for a ``platform.machine()`` value (``x86_64`` → ``amd64``)."""
    lowered = machine.strip().lower()
    return _ARCH.get(lowered, lowered)


def correct_resource_attributes(attributes: Attributes) -> dict[str, AttributeValue] | None:
    """Resource attributes with ``host.arch`` on the registry, or None when already right."""
    arch = attributes.get(semconv.HOST_ARCH)
    if not isinstance(arch, str) or host_arch(arch) == arch:
        return None
    return {**attributes, semconv.HOST_ARCH: host_arch(arch)}


# --- spans ------------------------------------------------------------------------------------------
def http_method_placeholder(method: str) -> str:
    """``{method}`` of the HTTP span-name rule: the method, or ``HTTP`` for ``_OTHER``."""
    return "HTTP" if method == "_OTHER" else method


def _http_server_name(name: str, kind: SpanKind, attributes: Attributes) -> str | None:
    """``{method}`` for an unrouted HTTP server span named after its raw path, else None.

    Only a name of the form ``{token} /...`` is replaced: a name a user set through a hook is kept."""
    if kind is not SpanKind.SERVER or attributes.get(semconv.HTTP_ROUTE):
        return None
    method = attributes.get(semconv.HTTP_REQUEST_METHOD) or attributes.get(OLD_HTTP_METHOD)
    if not isinstance(method, str) or not method:
        return None
    head, _, rest = name.partition(" ")
    if not rest.startswith("/") or " " in head:
        return None
    return http_method_placeholder(method)


def operation_name(name: str, kind: SpanKind, attributes: Attributes) -> str:
    """``crm.operation.name`` of an entry span: ``{method} {route}``, ``{method}`` for an unrouted
    request (never the raw path), else the span's name."""
    method = attributes.get(semconv.HTTP_REQUEST_METHOD)
    route = attributes.get(semconv.HTTP_ROUTE)
    if isinstance(method, str) and method and route:
        return f"{http_method_placeholder(method)} {route}"
    return _http_server_name(name, kind, attributes) or name


def _db_operation(attributes: Attributes) -> tuple[bool, str | None]:
    """(changed, value) for ``db.operation.name``: SQLAlchemy writes its span name there, the
    operation followed by the database (``SELECT /path/crm.db``), or the vendor alone when it has
    neither. Value None: remove the attribute."""
    value = attributes.get(semconv.DB_OPERATION_NAME)
    if not isinstance(value, str):
        return False, None
    namespace = attributes.get(semconv.DB_NAMESPACE)
    if isinstance(namespace, str) and namespace:
        if value == namespace:
            return True, None
        if value.endswith(" " + namespace):
            operation = value[: -len(namespace) - 1].strip()
            return True, operation or None
    if value == attributes.get(semconv.DB_SYSTEM_NAME):
        return True, None
    return False, None


def _db_target(attributes: Attributes) -> str | None:
    """``{target}`` of the database span-name rule."""
    for key in (semconv.DB_COLLECTION_NAME, semconv.DB_STORED_PROCEDURE_NAME, semconv.DB_NAMESPACE):
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value
    address, port = attributes.get(semconv.SERVER_ADDRESS), attributes.get(semconv.SERVER_PORT)
    if isinstance(address, str) and address:
        return f"{address}:{port}" if port is not None else address
    return None


def _db_name(name: str, kind: SpanKind, attributes: Attributes) -> str | None:
    """The rule's name for a database span with no operation (SQLAlchemy's ``connect``): ``{target}``,
    else ``{db.system.name}``. None when the span has an operation or a summary, or is already named so."""
    system = attributes.get(semconv.DB_SYSTEM_NAME)
    if (kind not in _DB_KINDS or not isinstance(system, str) or attributes.get(semconv.DB_OPERATION_NAME)
            or attributes.get(semconv.DB_QUERY_SUMMARY)):
        return None
    expected = _db_target(attributes) or system
    return None if name == expected else expected


def _split_address(attributes: Attributes) -> tuple[str, int] | None:
    """(host, port) when ``server.address`` carries a port (``127.0.0.1:5000``, ``[::1]:8080``)."""
    address = attributes.get(semconv.SERVER_ADDRESS)
    if not isinstance(address, str):
        return None
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        port_text = rest[1:] if bracket and rest.startswith(":") else ""
    elif address.count(":") == 1:
        host, _, port_text = address.partition(":")
    else:
        return None  # no port, or a bare IPv6 address
    if not host or not port_text.isdigit() or len(port_text) > 5:
        return None
    return host, int(port_text)


class SpanCorrection(NamedTuple):
    """A corrected span: its name, its attributes, and which corrections applied (for counting)."""

    name: str
    attributes: dict[str, AttributeValue]
    applied: tuple[str, ...]


def correct_span(name: str, kind: SpanKind, attributes: Attributes) -> SpanCorrection | None:
    """All span corrections at once; None when the span needs none (the common case, kept to a
    few lookups: only SERVER spans, database spans and an address with a colon are looked at)."""
    applied: list[str] = []
    new_name = _http_server_name(name, kind, attributes) if kind is SpanKind.SERVER else None
    if new_name is not None:
        applied.append("http_server_name")
    new_attributes: dict[str, AttributeValue] | None = None
    if semconv.DB_SYSTEM_NAME in attributes:
        changed, operation = _db_operation(attributes)
        if changed:
            new_attributes = dict(attributes)
            if operation is None:
                del new_attributes[semconv.DB_OPERATION_NAME]
            else:
                new_attributes[semconv.DB_OPERATION_NAME] = operation
            applied.append("db_operation_name")
        if new_name is None:
            new_name = _db_name(name, kind, new_attributes if new_attributes is not None else attributes)
            if new_name is not None:
                applied.append("db_span_name")
    address = attributes.get(semconv.SERVER_ADDRESS)
    split = _split_address(attributes) if isinstance(address, str) and ":" in address else None
    if split is not None:
        new_attributes = dict(attributes) if new_attributes is None else new_attributes
        new_attributes[semconv.SERVER_ADDRESS] = split[0]
        new_attributes.setdefault(semconv.SERVER_PORT, split[1])
        applied.append("server_address")
    if not applied:
        return None
    return SpanCorrection(new_name if new_name is not None else name,
                          new_attributes if new_attributes is not None else dict(attributes), tuple(applied))


def correct_event(name: str, attributes: Attributes | None) -> dict[str, AttributeValue] | None:
    """An exception event's attributes without ``exception.escaped``; None when there is none."""
    if name != "exception" or not attributes or EXCEPTION_ESCAPED not in attributes:
        return None
    return {key: value for key, value in attributes.items() if key != EXCEPTION_ESCAPED}


def with_dropped(attributes: Attributes | None, dropped: int) -> Any:
    """`attributes` keeping the SDK's count of dropped ones (the exporters send it); shared by every
    rewrite of a finished span (here and scrub_pipeline.py)."""
    if not dropped:
        return attributes
    bounded = BoundedAttributes(attributes=attributes, immutable=True)
    bounded.dropped = dropped
    return bounded


def with_dropped_list(items: Sequence[Any], dropped: int) -> Any:
    if not dropped:
        return tuple(items)
    bounded = BoundedList.from_seq(None, items)
    bounded.dropped = dropped
    return bounded


def correct_readable_span(span: ReadableSpan) -> ReadableSpan:
    """`span` itself when it needs no correction, else a corrected copy (for an exporter wrapper on
    the export thread; the copy keeps the dropped counts the SDK computed)."""
    attributes, events, _links = span_parts(span)  # no copies (sdk_compat reads the fields)
    fixed = correct_span(span.name, span.kind, attributes_dict(attributes or {}))
    new_events: list[Event] | None = None
    if len(events):
        for index, event in enumerate(events):
            event_attributes = correct_event(event.name, event.attributes) if event.name == "exception" else None
            if event_attributes is not None and new_events is None:
                new_events = list(events)[:index]
            if new_events is not None:
                new_events.append(event if event_attributes is None else Event(
                    event.name, with_dropped(event_attributes, event.dropped_attributes), event.timestamp))
    if fixed is None and new_events is None:
        return span
    return ReadableSpan(
        name=fixed.name if fixed is not None else span.name, context=span.context, parent=span.parent,
        resource=span.resource,
        attributes=with_dropped(fixed.attributes, span.dropped_attributes) if fixed is not None else span.attributes,
        events=with_dropped_list(new_events if new_events is not None else tuple(events), span.dropped_events),
        links=with_dropped_list(span.links, span.dropped_links), kind=span.kind, status=span.status,
        start_time=span.start_time, end_time=span.end_time, instrumentation_scope=span.instrumentation_scope)


# --- metrics ----------------------------------------------------------------------------------------
def connection_count_attributes(attributes: Attributes | None) -> dict[str, AttributeValue]:
    """The deprecated pool metric's attributes (``pool.name``, ``state``) under their registry names."""
    renamed: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if key == POOL_NAME:
            renamed[semconv.DB_CLIENT_CONNECTION_POOL_NAME] = value
        elif key == STATE:
            renamed[semconv.DB_CLIENT_CONNECTION_STATE] = value
        else:
            renamed[key] = value
    return renamed


class _CorrectingMeter:
    """A meter whose ``db.client.connections.usage`` is recorded as ``db.client.connection.count``,
    and whose up-down counters are summed in process (`local_sums.py`: the instrumentations record
    them on every request); its histograms record through `fast_histogram.py` (the SDK's own
    aggregations, without its per-recording work)."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Meter) -> None:
        self._inner = inner

    def create_up_down_counter(self, name: str, unit: str = "", description: str = "") -> Any:
        if name != DB_CLIENT_CONNECTIONS_USAGE:
            return local_up_down_counter(self._inner, name, unit, description)
        return local_up_down_counter(self._inner, semconv.DB_CLIENT_CONNECTION_COUNT, "{connection}",
                                     CONNECTION_COUNT_DESCRIPTION, rename=connection_count_attributes)

    def create_histogram(self, *args: Any, **kwargs: Any) -> Any:
        return fast_histogram(self._inner.create_histogram(*args, **kwargs),
                              enabled=current_runtime().settings.fast_spans)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CorrectingMeterProvider(MeterProvider):
    """Give this to an instrumentor (``meter_provider=``) that records the deprecated pool metric
    (SQLAlchemy): it records ``db.client.connection.count`` instead, with registry attributes and
    unit, on the real provider — for push and pull (Prometheus) readers alike. Its up-down counters
    (the pool count, the web frameworks' ``http.server.active_requests``) are summed in process."""

    def __init__(self, inner: MeterProvider) -> None:
        self._inner = inner

    def get_meter(self, name: str, version: str | None = None, schema_url: str | None = None,
                  attributes: Any = None) -> Meter:
        meter = self._inner.get_meter(name, version, schema_url, attributes)
        return _CorrectingMeter(meter)  # type: ignore[return-value]


def deprecated_pool_metric_view() -> View:
    """Drops ``db.client.connections.usage`` where :class:`CorrectingMeterProvider` was not used (an
    instrumentor set up by hand). A View can rename the metric but not its attributes nor its unit,
    so a renamed stream would still be off the registry: dropping is the honest fallback."""
    return View(instrument_name=DB_CLIENT_CONNECTIONS_USAGE, aggregation=DropAggregation())
