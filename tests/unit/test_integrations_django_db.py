"""Django ORM query spans: the SQL summary, the tracer's spans, one tracer per connection."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace

from otel_crm._internal.integrations import django_db
from otel_crm._internal.integrations.django_db import DjangoQueryTracer, _sql_summary
from otel_crm.testing import capture_telemetry


@pytest.mark.parametrize(("sql", "expected"), [
    ('SELECT "crm_lead"."id" FROM "crm_lead" WHERE "crm_lead"."id" = %s', ("SELECT", "crm_lead")),
    ('INSERT INTO "crm_contact" ("email") VALUES (%s)', ("INSERT", "crm_contact")),
    ('UPDATE "crm_lead" SET "status" = %s', ("UPDATE", "crm_lead")),
    ("/* comment */ delete from crm_lead", ("DELETE", "crm_lead")),
    ("BEGIN", ("BEGIN", "")),
    ("", ("", "")),
])
def test_sql_summary(sql: str, expected: tuple[str, str]) -> None:
    assert _sql_summary(sql) == expected


def test_django_query_tracer_makes_client_spans_with_the_tenant() -> None:
    with capture_telemetry() as telemetry:
        tracer_for = DjangoQueryTracer("sqlite")
        pg = DjangoQueryTracer("postgresql", "db.internal", "5432")
        from otel_crm import tenant_context

        def execute(sql: str, params: Any, many: bool, ctx: Any) -> str:
            if "boom" in sql:
                raise ValueError("no such table")
            return "rows"

        assert tracer_for(execute, "SELECT 1 FROM django_migrations", None, False, {}) == "rows"
        assert telemetry.spans() == []  # outside any trace: no one-span traces for startup queries
        parent = telemetry.runtime.tracer("test").start_as_current_span("request")
        with tenant_context("acme"), parent:
            assert tracer_for(execute, 'SELECT * FROM "crm_lead" WHERE id = %s', (1,), False, {}) == "rows"
            pg(execute, "INSERT INTO crm_contact VALUES (%s)", [(1,), (2,)], True, {})
            with pytest.raises(ValueError):
                tracer_for(execute, "SELECT boom FROM t", None, False, {})
        select, insert, failed, _request = telemetry.spans()
    assert select.name == "SELECT crm_lead" and select.kind is trace.SpanKind.CLIENT
    assert select.attributes["db.system.name"] == "sqlite"  # type: ignore[index]
    assert select.attributes["crm.tenant.id"] == "acme"  # type: ignore[index]
    assert "server.address" not in select.attributes  # type: ignore[operator]
    assert insert.attributes["db.operation.batch.size"] == 2  # type: ignore[index]
    assert insert.attributes["server.address"] == "db.internal" and insert.attributes["server.port"] == 5432  # type: ignore[index]
    assert failed.attributes["error.type"] == "ValueError"  # type: ignore[index]
    assert failed.status.status_code is trace.StatusCode.ERROR


def test_django_connections_get_one_tracer_unless_the_driver_is_instrumented() -> None:
    class Connection:
        vendor = "sqlite"
        settings_dict: dict[str, Any] = {}

        def __init__(self, raw: Any) -> None:
            self.execute_wrappers: list[Any] = []
            self.connection = raw

    plain = Connection(object())
    django_db._on_connection_created(None, plain)
    django_db._on_connection_created(None, plain)
    assert len(plain.execute_wrappers) == 1

    class Proxy:
        __wrapped__ = object()

    instrumented = Connection(Proxy())
    django_db._on_connection_created(None, instrumented)
    assert instrumented.execute_wrappers == []
