"""WSGI entry point, e.g. `opentelemetry-instrument gunicorn --chdir examples/django_crm wsgi:application`."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm_settings")
application = get_wsgi_application()
