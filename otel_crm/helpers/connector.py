"""Connector operations (HubSpot sync, WordPress push…): ``{operation} {connector}`` INTERNAL spans.

The span is the *logical* operation; the HTTP calls made inside it are the requests/httpx
instrumentations' CLIENT spans, its children — so the connector span is INTERNAL.
``service.peer.name`` names the remote service (the connector).

Metrics (each with ``service.peer.name``, ``crm.connector.operation``, ``crm.connector.resource_type``
when known, and the guarded ``crm.tenant.id``):

- ``crm.connector.duration`` (s) and ``crm.connector.operations`` ({operation}), by
  ``crm.connector.outcome`` (success|failure) and ``error.type`` on failure;
- ``crm.connector.records.synced`` ({record}): records reported with ``set_records`` or counted from
  a decorated function's return value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sized
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from otel_crm._internal import semconv
from otel_crm._internal.runtime import Runtime
from otel_crm.helpers._base import (
    Attributes,
    Instrumented,
    Operation,
    PerRuntime,
    function_name,
    metric_attributes,
)
from otel_crm.helpers._shared import BoundSets, Memo
from otel_crm.helpers._validate import COUNT, MAX_COUNT, VALID, Arguments, checked_count, is_name

__all__ = [
    "ConnectorOperation",
    "ConnectorOperationRun",
    "connector_name_of",
    "connector_operation",
    "count_records",
    "instrument_connector_operation",
    "instrument_sync_operation",
]

_SUFFIXES = ("connector", "client")
_F = TypeVar("_F", bound=Callable[..., Any])


class _Instruments:
    __slots__ = ("duration", "operations", "records")

    def __init__(self, runtime: Runtime) -> None:
        meter = runtime.meter()
        self.duration = meter.create_histogram(
            semconv.CRM_CONNECTOR_DURATION, unit="s", description="Duration of connector operations.",
            explicit_bucket_boundaries_advisory=list(semconv.CRM_DURATION_BUCKETS))
        self.operations = meter.create_counter(
            semconv.CRM_CONNECTOR_OPERATIONS, unit="{operation}",
            description="Connector operations, by outcome.")
        self.records = meter.create_counter(
            semconv.CRM_CONNECTOR_RECORDS_SYNCED, unit="{record}",
            description="Records handled by connector operations.")


_instruments: PerRuntime[_Instruments] = PerRuntime("otel_crm.helpers.connector", _Instruments)


def count_records(result: Any) -> int | None:
    """Records in a return value: len() of a sized collection (not str/bytes); for a mapping, len() of
    its ``records`` or ``items`` entry, else its integer ``count``; otherwise None (not counted)."""
    kind = type(result)
    if kind is list or kind is tuple or kind is set:  # the usual results, without the ABC checks below
        return len(result)
    if isinstance(result, Mapping):
        for key in ("records", "items"):
            value = result.get(key)
            if isinstance(value, Sized) and not isinstance(value, (str, bytes, bytearray)):
                return len(value)
        count = result.get("count")
        if isinstance(count, int) and not isinstance(count, bool):
            return count
        return None
    if isinstance(result, Sized) and not isinstance(result, (str, bytes, bytearray, memoryview)):
        return len(result)
    return None


def _normalise(name: str) -> str:
    lowered = name.lower()
    for suffix in _SUFFIXES:
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            return lowered[: -len(suffix)].rstrip("_-") or lowered
    return lowered


def connector_name_of(owner: object) -> str:
    """Connector name of an instance (or class): its ``connector_name`` or ``name`` string attribute,
    else its class name lowercased without a ``Connector``/``Client`` suffix
    (``HubSpotConnector`` → ``hubspot``, ``WordPressClient`` → ``wordpress``)."""
    for attribute in ("connector_name", "name"):
        value = getattr(owner, attribute, None)
        if isinstance(value, str) and value:
            return value
    cls = owner if isinstance(owner, type) else type(owner)
    name = _class_names.get(cls)
    if name is None:
        name = _class_names.put(cls, _normalise(cls.__name__))
    return name


_class_names: Memo[type, str] = Memo(256)


class _Shape:
    """What one connector, operation, resource type (and decorated function) always give: the span's
    name and start attributes, the metrics' base attributes and their bound sets."""

    __slots__ = ("base", "sets", "span_name", "start")

    def __init__(self, connector: str, operation: str, resource_type: str | None, code_function: str | None,
                 arguments: Arguments) -> None:
        self.base: Attributes = {semconv.SERVICE_PEER_NAME: connector, semconv.CRM_CONNECTOR_OPERATION: operation}
        if resource_type is not None:
            self.base[semconv.CRM_CONNECTOR_RESOURCE_TYPE] = resource_type
        start = dict(self.base)
        if code_function is not None:
            start[semconv.CODE_FUNCTION_NAME] = code_function
        self.start = arguments.note(start)
        self.span_name = f"{operation} {connector}"
        self.sets = BoundSets()


_shapes: Memo[tuple[Any, Any, Any], _Shape] = Memo(256)
_DURATION = semconv.CRM_CONNECTOR_DURATION
_OPERATIONS = semconv.CRM_CONNECTOR_OPERATIONS
_RECORDS = semconv.CRM_CONNECTOR_RECORDS_SYNCED
_OUTCOME = semconv.CRM_CONNECTOR_OUTCOME


class ConnectorOperationRun(Operation):
    """One connector operation; the handle of ``with connector_operation(...) as op``."""

    __slots__ = ("_count_result", "_records", "_shape")
    component = "helpers.connector"

    def __init__(self, shape: _Shape, count_result: bool) -> None:
        Operation.__init__(self, shape.span_name, SpanKind.INTERNAL, shape.start)
        self._shape = shape
        self._count_result = count_result
        self._records: int | None = None

    def set_records(self, count: int) -> None:
        """Records handled (synced, pushed, fetched) by this operation."""
        records = checked_count(count, MAX_COUNT)
        if records is None:
            self._reject("set_records.count", count, COUNT)
            return
        self._records = records

    @property
    def records(self) -> int | None:
        return self._records

    def _on_result(self, result: Any) -> None:
        if self._count_result and self._records is None:
            counted = count_records(result)
            # A `count` the function returned is its data, not a misuse of ours: out of range, not counted.
            self._records = checked_count(counted, MAX_COUNT) if counted is not None else None

    def _on_items(self, count: int) -> None:
        # A decorated generator streams its records: each yielded item is one record.
        if self._count_result and self._records is None:
            self._records = count

    def _ending(self, span: trace.Span) -> None:
        if self._records is not None:
            span.set_attribute(semconv.CRM_CONNECTOR_RECORDS, self._records)

    def _record(self, runtime: Runtime, duration: float, error: str | None) -> None:
        instruments = _instruments(runtime)
        shape, tenant = self._shape, self._tenant_id
        if error is None:  # the usual case: sets bound once (see BoundSets)
            attributes = shape.sets.get(runtime, _DURATION, _DURATION if tenant is None else (_DURATION, tenant),
                                        shape.base, tenant, outcome_key=_OUTCOME)
        else:
            attributes = metric_attributes(runtime, _DURATION, shape.base, tenant, error=error,
                                           outcome_key=_OUTCOME)
        instruments.duration.record(duration, attributes, self._context)
        if tenant is not None:  # each metric has its own tenant budget
            if error is None:
                attributes = shape.sets.get(runtime, _OPERATIONS, (_OPERATIONS, tenant), shape.base, tenant,
                                            outcome_key=_OUTCOME)
            else:
                attributes = metric_attributes(runtime, _OPERATIONS, shape.base, tenant, error=error,
                                               outcome_key=_OUTCOME)
        instruments.operations.add(1, attributes, self._context)
        if self._records:
            records = shape.sets.get(runtime, _RECORDS, _RECORDS if tenant is None else (_RECORDS, tenant),
                                     shape.base, tenant)
            instruments.records.add(self._records, records, self._context)


class ConnectorOperation(Instrumented[ConnectorOperationRun]):
    """Returned by :func:`connector_operation` and the two decorator factories.

    With ``connector=None`` (decorators only) the name is resolved per call from the first
    positional argument (``self``/``cls``) with :func:`connector_name_of`; for a plain function
    it is its module's last component (``myapp.connectors.hubspot`` → ``hubspot``).
    """

    __slots__ = ("_arguments", "_cache", "_connector", "_count_result", "_functions", "_operation_name",
                 "_resource_type", "_shape")

    def __init__(self, connector: str | None, operation: str, resource_type: str | None,
                 count_result: bool, arguments: Arguments, *, shape: _Shape | None = None) -> None:
        self._connector = connector
        self._operation_name = operation
        self._resource_type = resource_type
        self._count_result = count_result
        self._arguments = arguments
        self._shape = shape  # the context manager's one shape (a known connector, no function)
        # Built on first use (the context manager form never needs them):
        self._cache: Memo[tuple[str, str | None], _Shape] | None = None
        # code.function.name -> (is a method, fallback connector name from the module)
        self._functions: dict[str, tuple[bool, str]] | None = None

    def __call__(self, function: _F) -> _F:
        parts = getattr(function, "__qualname__", "").split(".")
        is_method = len(parts) > 1 and parts[-2] != "<locals>"
        module = str(getattr(function, "__module__", None) or "unknown")
        if self._functions is None:
            self._functions = {}
        self._functions[function_name(function)] = (is_method, _normalise(module.rsplit(".", 1)[-1]))
        return super().__call__(function)

    def _operation(self, args: tuple[Any, ...] | None, code_function: str | None
                   ) -> ConnectorOperationRun:
        shape = self._shape
        if shape is None or code_function is not None:
            shape = self._resolve(args, code_function)
        return ConnectorOperationRun(shape, self._count_result and args is not None)

    def _resolve(self, args: tuple[Any, ...] | None, code_function: str | None) -> _Shape:
        connector = self._connector
        if connector is None:
            is_method, fallback = (self._functions or {}).get(code_function or "", (False, "unknown"))
            connector = connector_name_of(args[0]) if is_method and args else fallback
        key = (connector, code_function)
        cache = self._cache
        if cache is None:
            cache = self._cache = Memo(65)  # names come from instances: keep this bounded
        shape = cache.get(key)
        if shape is None:
            shape = cache.put(key, _Shape(connector, self._operation_name, self._resource_type,
                                          code_function, self._arguments))
        return shape


def connector_operation(connector: str, operation: str, *,
                        resource_type: str | None = None) -> ConnectorOperation:
    """Trace one connector operation: ``with connector_operation("hubspot", "sync",
    resource_type="contacts") as op: …; op.set_records(len(batch))`` (or ``async with``)."""
    try:
        shape = _shapes.get((connector, operation, resource_type))
    except Exception:  # an unhashable argument: checked (and refused) below
        shape = None
    if shape is None and is_name(connector) and is_name(operation) and (
            resource_type is None or is_name(resource_type)):
        shape = _shapes.put((connector, operation, resource_type),
                            _Shape(connector, operation, resource_type, None, VALID))
    if shape is not None:
        return ConnectorOperation(connector, operation, resource_type, False, VALID, shape=shape)
    arguments = Arguments(ConnectorOperationRun.component, "connector_operation")
    return ConnectorOperation(arguments.name("connector", connector), arguments.name("operation", operation),
                              arguments.optional_name("resource_type", resource_type), False, arguments)


def instrument_connector_operation(operation: str, *, connector: str | None = None
                                   ) -> ConnectorOperation:
    """Decorator for a connector method (sync or async); counts records from its return value."""
    arguments = Arguments(ConnectorOperationRun.component, "instrument_connector_operation")
    return ConnectorOperation(arguments.optional_name("connector", connector), arguments.name("operation", operation),
                              None, True, arguments)


def instrument_sync_operation(resource_type: str, *, connector: str | None = None) -> ConnectorOperation:
    """Decorator for a method syncing ``resource_type`` (operation ``sync``); counts the records
    it returns (a list, or a dict with ``records``/``items``/``count``)."""
    arguments = Arguments(ConnectorOperationRun.component, "instrument_sync_operation")
    return ConnectorOperation(arguments.optional_name("connector", connector), "sync",
                              arguments.name("resource_type", resource_type), True, arguments)
