"""The WSGI middleware: tenant context around the app (and its lazily iterated body), nothing
leaked after the request, the access line with the real status."""

from __future__ import annotations

from typing import Any

import pytest

from otel_crm._internal.integrations.extractor import TenantExtractor
from otel_crm._internal.integrations.wsgi import TenantWSGIMiddleware
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import Tenant, current_tenant
from otel_crm.testing import capture_telemetry


def test_wsgi_middleware_detaches_even_when_the_app_raises() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        assert current_tenant() == Tenant("acme")
        raise RuntimeError("boom")

    middleware = TenantWSGIMiddleware(app, TenantExtractor(resolve_settings({})))
    with capture_telemetry() as telemetry, pytest.raises(RuntimeError):
        middleware({"HTTP_X_TENANT_ID": "acme", "REQUEST_METHOD": "POST", "PATH_INFO": "/x"},
                   lambda *a: None)
    assert current_tenant() is None
    access = [r for r in telemetry.logs() if r.log_record.attributes.get("path") == "/x"]  # type: ignore[union-attr]
    assert access[0].log_record.attributes["status_code"] == 500  # type: ignore[index]
    assert access[0].log_record.attributes["crm.tenant.id"] == "acme"  # type: ignore[index]


def test_middleware_defaults_to_the_running_settings() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [current_tenant().id.encode()]  # type: ignore[union-attr]

    with capture_telemetry(tenant_header="X-Org"):
        body = TenantWSGIMiddleware(app)({"HTTP_X_ORG": "acme"}, lambda *a: None)
    assert list(body) == [b"acme"]


def test_a_generator_app_keeps_its_tenant_and_logs_its_real_status(caplog) -> None:  # type: ignore[no-untyped-def]
    import logging as _logging

    from otel_crm._internal.integrations.wsgi import TenantWSGIMiddleware as _Middleware
    from otel_crm._internal.tenancy import current_tenant as _current

    seen_in_body = []

    def lazy_app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("201 Created", [])
        seen_in_body.append(_current())
        yield b"chunk"

    wrapped = _Middleware(lazy_app)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/leads", "HTTP_X_TENANT_ID": "acme"}
    with caplog.at_level(_logging.INFO, logger="otel_crm.access"):
        body = wrapped(environ, lambda status, headers, exc_info=None: None)
        assert _current() is None  # nothing leaks to the server thread between chunks
        assert list(body) == [b"chunk"]
        body.close()  # type: ignore[attr-defined]
    assert seen_in_body[0] is not None and seen_in_body[0].id == "acme"
    assert _current() is None
    access = [r for r in caplog.records if r.name == "otel_crm.access"]
    assert len(access) == 1 and access[0].status_code == 201
