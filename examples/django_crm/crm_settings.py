"""Settings of the Django CRM example: one file, SQLite, JSON API, no templates or admin."""

from __future__ import annotations

import os
import tempfile

DEBUG = False
SECRET_KEY = os.environ.get("CRM_SECRET_KEY", "example-only-not-secret")
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
INSTALLED_APPS = ["crm"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "crm.urls"
APPEND_SLASH = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CRM_DB_PATH") or os.path.join(tempfile.gettempdir(), "django_crm.sqlite3"),
    }
}
# Django's default logging stays: `django.server` request lines go to stderr only (otel_crm's
# access line is the structured one), and request errors reach the root logger — and so
# otel_crm's JSON and OTLP handlers — through `django.request`.
