"""No-code integration: open the tenant context (and write the access line) around Flask and
Django apps by wrapping the class's `__call__`, outside the instrumentation's server span."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from otel_crm._internal.deferred import when_imported
from otel_crm._internal.integrations.asgi import TenantASGIMiddleware
from otel_crm._internal.integrations.django_db import install_django_query_spans
from otel_crm._internal.integrations.extractor import TenantExtractor
from otel_crm._internal.integrations.wsgi import wsgi_call
from otel_crm._internal.settings import Settings

__all__ = ["patch_frameworks"]

_PATCHED = "_otel_crm_patched"


def _patch_call(cls: type, extractor: TenantExtractor, asgi: bool = False) -> None:
    original = cls.__dict__.get("__call__") or getattr(cls, "__call__")  # noqa: B004, B009
    if getattr(original, _PATCHED, False):
        return
    if asgi:

        @functools.wraps(original)
        async def async_call(self: Any, scope: Any, receive: Any, send: Any) -> None:
            await TenantASGIMiddleware(functools.partial(original, self), extractor)(scope, receive, send)

        setattr(async_call, _PATCHED, True)
        setattr(cls, "__call__", async_call)  # noqa: B010
        return

    @functools.wraps(original)
    def call(self: Any, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return wsgi_call(functools.partial(original, self), extractor, environ, start_response)

    setattr(call, _PATCHED, True)
    setattr(cls, "__call__", call)  # noqa: B010


def _patch_flask(settings: Settings) -> None:
    import flask

    _patch_call(flask.Flask, TenantExtractor(settings, flask.Request))


def _patch_django_wsgi(settings: Settings) -> None:
    from django.core.handlers.wsgi import WSGIHandler, WSGIRequest

    _patch_call(WSGIHandler, TenantExtractor(settings, WSGIRequest))


def _patch_django_asgi(settings: Settings) -> None:
    from django.core.handlers.asgi import ASGIHandler

    _patch_call(ASGIHandler, TenantExtractor(settings), asgi=True)


def patch_frameworks(settings: Settings, installed: Callable[[str], bool]) -> list[str]:
    """Open the tenant context around Flask and Django apps; returns what is patched.

    Each patch runs when the app imports the module it patches (at once if it already has): a
    Flask app never imports Django for it, nor a Django app Flask (startup cost, deferred.py).
    The handler classes are patched before the importing statement gets them, as before."""
    patched: list[str] = []
    if installed("flask"):
        when_imported("flask", "patch_flask", lambda: _patch_flask(settings))
        patched.append("flask")
    if installed("django"):
        when_imported("django.core.handlers.wsgi", "patch_django", lambda: _patch_django_wsgi(settings))
        when_imported("django.core.handlers.asgi", "patch_django", lambda: _patch_django_asgi(settings))
        patched.append("django")
        # Connects to connection_created, which Django sends only after this module is imported.
        when_imported("django.db.backends.signals", "patch_django_db", install_django_query_spans)
        patched.append("django.db")
    return patched
