"""A SQLAlchemy workload under `opentelemetry-instrument` (tests/integration/test_sqlalchemy_fast_path.py):
statements of every kind inside a `job` span, then it writes which statement hook traced them.

argv: SQLite file path, status path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import sqlalchemy  # the deferred instrumentation loads here, as in an app
from opentelemetry import context, trace
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.instrumentation.utils import suppress_instrumentation
from sqlalchemy import Integer, String, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

DB, STATUS = Path(sys.argv[1]), Path(sys.argv[2])


class Base(DeclarativeBase):
    pass


class Lead(Base):
    __tablename__ = "leads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


def main() -> None:
    a = sqlalchemy.create_engine(f"sqlite:///{DB}")
    b = sqlalchemy.create_engine("sqlite://")
    Base.metadata.create_all(a)
    with trace.get_tracer("job").start_as_current_span("job"):
        with a.connect() as conn:
            conn.execute(text("INSERT INTO leads (name) VALUES (:n)"), {"n": "ada"})
            conn.execute(text("INSERT INTO leads (name) VALUES (:n)"), [{"n": "bob"}, {"n": "cy"}])
            for _ in range(2):
                conn.execute(text("SELECT name FROM leads WHERE id = 1")).all()
            try:
                conn.execute(text("SELECT * FROM missing_table"))
            except OperationalError:
                conn.rollback()
            conn.commit()
        with b.connect() as conn:
            conn.execute(text("SELECT 1")).all()
        with Session(a) as session:
            session.add(Lead(name="dee"))
            session.commit()
            session.execute(select(Lead).where(Lead.name == "dee")).scalars().all()
        with suppress_instrumentation(), a.connect() as conn:
            conn.execute(text("SELECT 2")).all()
        token = context.attach(context.set_value("suppress_instrumentation", True))
        try:
            with a.connect() as conn:
                conn.execute(text("SELECT 3")).all()
        finally:
            context.detach(token)
    a.dispose()
    b.dispose()
    STATUS.write_text(json.dumps({"hook": EngineTracer._before_cur_exec.__module__}))


if __name__ == "__main__":
    main()
