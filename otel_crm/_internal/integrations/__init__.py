"""Framework integrations: tenant context and access line around WSGI/ASGI apps (`wsgi`, `asgi`),
the Flask and Django patches that install them with no code (`frameworks`), tenant extraction from
a request (`extractor`) and Django ORM query spans (`django_db`)."""

from __future__ import annotations

__all__: list[str] = []
