"""Tenant extraction from a request: header, user header, resolver, trusted baggage."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from otel_crm._internal.integrations.extractor import TenantExtractor
from otel_crm._internal.integrations.wsgi import TenantWSGIMiddleware
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import MAX_TENANT_ID_LENGTH, Tenant, current_tenant

RESOLVER_CALLS: list[Any] = []


def tenant_from_subdomain(request: Any) -> str | None:
    """A resolver as users write them: `acme.crm.example.com` → `acme`."""
    RESOLVER_CALLS.append(request)
    host = request.host.split(":")[0]
    return host.split(".")[0] if host.count(".") >= 2 else None


def broken_resolver(request: Any) -> str:
    raise KeyError("session store down")


def _extract(environ: dict[str, str], **settings: Any) -> Tenant | None:
    return TenantExtractor(resolve_settings({}, **settings), Flask.request_class).from_environ(
        {"wsgi.input": None, "SERVER_NAME": "x", "SERVER_PORT": "80", **environ})


def test_tenant_and_user_from_headers() -> None:
    assert _extract({"HTTP_X_TENANT_ID": "acme", "HTTP_X_USER_ID": "u-1"}) == Tenant("acme", "u-1")
    assert _extract({"HTTP_X_USER_ID": "u-1"}) is None
    assert _extract({"HTTP_X_ORG": "globex"}, tenant_header="X-Org") == Tenant("globex")
    assert _extract({"HTTP_X_TENANT_ID": "acme"}, tenant_header="") is None


def test_header_values_are_cleaned_and_bounded() -> None:
    tenant = _extract({"HTTP_X_TENANT_ID": " ac\x00me\x1b" + "x" * 10_000, "HTTP_X_USER_ID": "\r\n"})
    assert tenant is not None and tenant.id.startswith("acme") and len(tenant.id) == MAX_TENANT_ID_LENGTH
    assert tenant.user_id is None
    assert _extract({"HTTP_X_TENANT_ID": "\x07\x08"}) is None


def test_resolver_gets_the_framework_request() -> None:
    RESOLVER_CALLS.clear()
    path = "tests.unit.test_integrations_extractor:tenant_from_subdomain"
    assert _extract({"HTTP_HOST": "acme.crm.example.com"}, tenant_resolver=path) == Tenant("acme")
    assert _extract({"HTTP_HOST": "localhost"}, tenant_resolver=path) is None
    assert isinstance(RESOLVER_CALLS[0], Flask.request_class)
    # The header wins; the resolver is not even called.
    RESOLVER_CALLS.clear()
    assert _extract({"HTTP_HOST": "acme.crm.example.com", "HTTP_X_TENANT_ID": "globex"},
                    tenant_resolver=path) == Tenant("globex")
    assert RESOLVER_CALLS == []


@pytest.mark.parametrize("path", ["tests.unit.test_integrations_extractor:broken_resolver", "no.such.module:f",
                                  "tests.unit.test_integrations_extractor:no_such_function", "not-a-path"])
def test_a_failing_resolver_never_breaks_the_request(path: str, caplog: pytest.LogCaptureFixture) -> None:
    app = Flask("resolver")
    app.get("/")(lambda: {"tenant": getattr(current_tenant(), "id", None)})
    app.wsgi_app = TenantWSGIMiddleware(app.wsgi_app, TenantExtractor(  # type: ignore[method-assign]
        resolve_settings({}, tenant_resolver=path), Flask.request_class))
    client = app.test_client()
    for _ in range(3):
        response = client.get("/", headers={"Host": "acme.crm.example.com"})
        assert response.status_code == 200 and response.get_json() == {"tenant": None}
    assert client.get("/", headers={"X-Tenant-ID": "acme"}).get_json() == {"tenant": "acme"}
    warnings = [r for r in caplog.records if "tenant_resolver" in r.getMessage()]
    assert len(warnings) <= 1  # logged once, then only counted


def test_incoming_baggage_is_ignored_by_default_and_used_when_trusted() -> None:
    forged = {"HTTP_BAGGAGE": "crm.tenant.id=victim,crm.user.id=u-9,crm.tenant.tier=gold"}
    assert _extract(forged) is None
    assert _extract(forged, trust_incoming_baggage=True) == Tenant("victim", "u-9", "gold")
    # A header beats baggage even when baggage is trusted; the user header beats baggage's user.
    assert _extract({**forged, "HTTP_X_TENANT_ID": "acme"}, trust_incoming_baggage=True) == Tenant("acme")
    assert _extract({**forged, "HTTP_X_USER_ID": "u-1"}, trust_incoming_baggage=True) == Tenant(
        "victim", "u-1", "gold")
    assert _extract({"HTTP_BAGGAGE": "crm.tenant.id=%07%08"}, trust_incoming_baggage=True) is None
    long = _extract({"HTTP_BAGGAGE": "crm.tenant.id=" + "a" * 1000}, trust_incoming_baggage=True)
    assert long is not None and len(long.id) == MAX_TENANT_ID_LENGTH
