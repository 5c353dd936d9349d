"""The ASGI middleware: tenant context for HTTP (not lifespan) scopes, the access line."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from otel_crm._internal.integrations.asgi import TenantASGIMiddleware
from otel_crm._internal.integrations.extractor import TenantExtractor
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.tenancy import current_tenant
from otel_crm.testing import capture_telemetry


def test_asgi_middleware_tenant_and_access_log() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            assert current_tenant() is None
            return
        logging.getLogger("crm").info("inside")
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": current_tenant().id.encode()})  # type: ignore[union-attr]

    middleware = TenantASGIMiddleware(app, TenantExtractor(resolve_settings({})))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await middleware({"type": "lifespan"}, None, send)
        await middleware({"type": "http", "method": "POST", "path": "/leads",
                          "headers": [(b"x-tenant-id", b"acme"), (b"x-user-id", b"u-1")]}, None, send)

    with capture_telemetry() as telemetry:
        asyncio.run(run())
    assert sent[-1]["body"] == b"acme"
    records = {r.log_record.body: r.log_record.attributes for r in telemetry.logs()}
    assert records["inside"]["crm.tenant.id"] == "acme"  # type: ignore[index]
    access = records["POST /leads 201"]
    assert access["crm.tenant.id"] == "acme" and access["status_code"] == 201  # type: ignore[index]
    assert "user.id" not in access  # type: ignore[operator]
    assert current_tenant() is None
