"""Django ORM query spans (Django's instrumentation has none): a connection `execute_wrapper`,
skipped when a DB-API instrumentation (sqlite3, psycopg…) already wraps the driver connection, so
queries are never traced twice. Only queries inside a trace get a span; attributes follow the
stable database conventions."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from otel_crm._internal import semconv
from otel_crm._internal.safety import error_type, guard

__all__ = ["DjangoQueryTracer", "install_django_query_spans"]

# Django's `connection.vendor` → `db.system.name`.
_DB_SYSTEMS = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mysql", "oracle": "oracle.db"}
_SQL_OPERATION = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(\w+)", re.DOTALL)
_SQL_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|TABLE|JOIN)\s+[\"`\[]?([\w.]+)", re.IGNORECASE)


def _sql_summary(sql: str) -> tuple[str, str]:
    """(`db.operation.name`, `db.collection.name`) of a statement; either may be empty."""
    operation = _SQL_OPERATION.match(sql)
    table = _SQL_TABLE.search(sql)
    return (operation.group(1).upper() if operation else "", table.group(1) if table else "")


class DjangoQueryTracer:
    """A Django `execute_wrapper`: one CLIENT span per query."""

    def __init__(self, vendor: str, host: str | None = None, port: Any = None):
        self._system = _DB_SYSTEMS.get(vendor, vendor or "other_sql")
        self._server: dict[str, Any] = {}
        if host and vendor != "sqlite":
            self._server[semconv.SERVER_ADDRESS] = host
            if port:
                self._server[semconv.SERVER_PORT] = int(port)
        self._tracer: trace.Tracer | None = None

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool,
                 ctx: dict[str, Any]) -> Any:
        # Queries outside any trace (startup checks, migrations, a bare management command) would
        # each become a one-span trace and an "entry" for RED metrics: trace them only in a trace.
        if not trace.get_current_span().get_span_context().is_valid or not is_instrumentation_enabled():
            return execute(sql, params, many, ctx)
        tracer = self._tracer
        if tracer is None:
            tracer = self._tracer = trace.get_tracer("otel_crm.django.db")
        operation, table = _sql_summary(sql) if isinstance(sql, str) else ("", "")
        attributes: dict[str, Any] = {semconv.DB_SYSTEM_NAME: self._system, **self._server}
        if isinstance(sql, str):
            attributes[semconv.DB_QUERY_TEXT] = sql  # Django passes literals as parameters, never inline
        if operation:
            attributes[semconv.DB_OPERATION_NAME] = operation
        if table:
            attributes[semconv.DB_COLLECTION_NAME] = table
        if many and isinstance(params, (list, tuple)):
            attributes[semconv.DB_OPERATION_BATCH_SIZE] = len(params)
        name = f"{operation} {table}".strip() or self._system
        with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes) as span:
            try:
                return execute(sql, params, many, ctx)
            except Exception as exc:
                span.set_attribute(semconv.ERROR_TYPE, error_type(exc))
                raise


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    with guard("django_db"):
        wrappers = connection.execute_wrappers
        if any(isinstance(w, DjangoQueryTracer) for w in wrappers):
            return
        # A DB-API instrumentation (sqlite3, psycopg2, psycopg, mysqlclient) wraps the driver
        # connection in a proxy with __wrapped__: it traces the queries already.
        if hasattr(getattr(connection, "connection", None), "__wrapped__"):
            return
        settings = getattr(connection, "settings_dict", {}) or {}
        wrappers.append(DjangoQueryTracer(getattr(connection, "vendor", ""), settings.get("HOST"),
                                          settings.get("PORT")))


def install_django_query_spans() -> None:
    """Add a DjangoQueryTracer to every database connection Django opens from now on."""
    from django.db.backends.signals import connection_created  # Django is optional: only when used

    connection_created.connect(_on_connection_created, weak=False, dispatch_uid="otel_crm.django_db")
