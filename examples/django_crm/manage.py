#!/usr/bin/env python
"""The Django CRM example. Run it under the distro, no code changes needed:

    opentelemetry-instrument python examples/django_crm/manage.py runserver 127.0.0.1:8000 --noreload

`--noreload`: Django's autoreloader runs the app in a child process, and the parent (which only
watches files) would be instrumented too. Set DJANGO_SETTINGS_MODULE=crm_settings and put this
folder on PYTHONPATH to save a re-exec at startup (see `_settings_visible_to_instrumentation`).

Environment: CRM_PORT (used when runserver gets no address), CRM_DB_PATH (SQLite file; default
in the temp dir), CRM_SERVICES_URL (an internal service; default: a stand-in started on a free
loopback port), CRM_PARTNER_URL (a third-party API; default: not called), CRM_TEST_ENDPOINTS=1
(adds /privacy-probe, for the privacy tests).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = "crm_settings"


def _settings_visible_to_instrumentation() -> None:
    """opentelemetry-instrument instruments Django *before* this script runs. When it finds no
    DJANGO_SETTINGS_MODULE it configures Django with empty settings (no URLs, no apps): start again
    with the variable set, so the instrumentation and the app see the same settings."""
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        return
    from django.conf import settings

    # Configured already (by the instrumentation, with empty settings), or instrumentation loaded
    # and possibly skipping Django for want of settings: start again with the variable set.
    if settings.configured or "opentelemetry.instrumentation.auto_instrumentation" in sys.modules:
        env = dict(os.environ, DJANGO_SETTINGS_MODULE=SETTINGS,
                   PYTHONPATH=os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS


def _migrate() -> None:
    """Create or update the SQLite schema (shipped migrations; a few ms on a fresh file)."""
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def main() -> None:
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    _settings_visible_to_instrumentation()
    import django
    from django.core.management import execute_from_command_line

    argv = list(sys.argv)
    if len(argv) > 1 and argv[1] == "runserver":
        if os.environ.get("CRM_PORT") and not any(not a.startswith("-") for a in argv[2:]):
            argv.insert(2, f"127.0.0.1:{os.environ['CRM_PORT']}")  # no address given: use CRM_PORT
        django.setup()
        _migrate()
    execute_from_command_line(argv)


if __name__ == "__main__":
    main()
