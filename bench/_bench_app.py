"""The app the request benchmark measures: the Flask CRM example (`examples/flask_crm/app.py`)
plus two bench-only routes (started by bench/bench_requests.py, in process or served by werkzeug).

    GET /report         a dashboard-like request with several child spans: four SQL statements
                        (SQLAlchemy on in-memory SQLite), so the cost per child span shows
    GET /_bench/flush   force_flush of the global tracer and logger providers (whatever the arm
                        installed; nothing without OpenTelemetry): lets the HTTP variant end its
                        timed window with everything exported, as the in-process worker does

Run directly (`python bench/_bench_app.py`, `CRM_PORT`): the same werkzeug server as the example.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "flask_crm"))
sys.path.insert(0, str(ROOT / "bench"))

import app as crm_app  # type: ignore[import-not-found]  # noqa: E402
from _common import REQUEST_PATHS as PATHS  # noqa: E402
from _common import SEED_LEADS, TENANTS  # noqa: E402
from flask import Flask  # noqa: E402
from sqlalchemy import create_engine, func, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from sqlalchemy.pool import StaticPool  # noqa: E402

__all__ = ["PATHS", "SEED_LEADS", "TENANTS", "create_bench_app", "flush_telemetry"]


def flush_telemetry() -> None:
    """Export what the global providers hold (spans and log records), as a timed window's end."""
    try:
        from opentelemetry import _logs, trace
    except ImportError:  # the bare arm may run without OpenTelemetry importable: nothing to flush
        return
    for provider in (trace.get_tracer_provider(), _logs.get_logger_provider()):
        flush = getattr(provider, "force_flush", None)
        if flush is not None:
            flush()


def create_bench_app() -> Flask:
    app = crm_app.create_app(services_url="http://127.0.0.1:9")
    # A second engine for /report (the example keeps its own private): created after
    # `opentelemetry-instrument` patched create_engine, so its statements get CLIENT spans.
    engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    crm_app.Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(crm_app.Lead(name=f"Lead {i}", email=f"lead{i}@example.com", company=f"Co {i % 3}")
                        for i in range(SEED_LEADS))
        session.commit()

    @app.get("/report")
    def report() -> Any:
        with Session(engine) as session:
            total = session.scalar(select(func.count(crm_app.Lead.id)))
            new = session.scalar(select(func.count(crm_app.Lead.id)).where(crm_app.Lead.status == "new"))
            companies = session.execute(select(crm_app.Lead.company, func.count(crm_app.Lead.id))
                                        .group_by(crm_app.Lead.company)).all()
            latest = session.scalars(select(crm_app.Lead).order_by(crm_app.Lead.id.desc()).limit(3)).all()
            return {"total": total, "new": new, "companies": {c: n for c, n in companies},
                    "latest": [lead.to_dict() for lead in latest]}

    @app.get("/_bench/flush")
    def flush() -> Any:
        flush_telemetry()
        return {"flushed": True}

    return app


if __name__ == "__main__":
    port = int(os.environ.get("CRM_PORT", "5000"))
    create_bench_app().run(host="127.0.0.1", port=port, threaded=True, use_reloader=False)
