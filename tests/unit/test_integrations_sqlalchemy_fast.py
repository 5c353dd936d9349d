"""The cheaper SQLAlchemy span path (otel_crm/_internal/integrations/sqlalchemy_fast.py): differential
tests, the same workload through real SQLAlchemy with upstream's hooks and with otel_crm's, whose
finished spans and metric points must be identical; plus its bounds, its guard and its fallback."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")

from opentelemetry import context as context_api  # noqa: E402 - after the importorskip
from opentelemetry.instrumentation import _semconv  # noqa: E402
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor, engine  # noqa: E402
from opentelemetry.instrumentation.utils import suppress_instrumentation  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.sdk.trace.id_generator import IdGenerator  # noqa: E402
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF  # noqa: E402
from sqlalchemy import Integer, String, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column  # noqa: E402

from otel_crm._internal.corrections import CorrectingMeterProvider  # noqa: E402
from otel_crm._internal.fast_tracer import FastTracerProvider  # noqa: E402
from otel_crm._internal.integrations import sqlalchemy_fast  # noqa: E402
from otel_crm._internal.integrations.sqlalchemy_fast import (  # noqa: E402
    install_sqlalchemy_fast_path,
    uninstall_sqlalchemy_fast_path,
)

UPSTREAM_HOOK = engine.EngineTracer._before_cur_exec
_Stability = _semconv._OpenTelemetrySemanticConventionStability


class _Base(DeclarativeBase):
    pass


class _Lead(_Base):
    __tablename__ = "leads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class _Ids(IdGenerator):
    """The same ids in both arms (sqlcommenter's traceparent is in the statement)."""

    def __init__(self) -> None:
        self._next = 0

    def generate_span_id(self) -> int:
        self._next += 1
        return self._next

    def generate_trace_id(self) -> int:
        self._next += 1
        return self._next << 64


@pytest.fixture
def restore() -> Iterator[None]:
    """Leave the fast path and the stability modes as the test found them."""
    was_installed = bool(sqlalchemy_fast._installed)
    state = (_Stability._initialized, _Stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING)
    uninstall_sqlalchemy_fast_path()
    yield
    uninstall_sqlalchemy_fast_path()
    _Stability._initialized, _Stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING = state
    if was_installed:
        install_sqlalchemy_fast_path()


def _workload(db: Path) -> None:
    a = sqlalchemy.create_engine(f"sqlite:///{db}")
    b = sqlalchemy.create_engine("sqlite://")
    tracer = context_tracer[0]
    try:
        with a.connect() as conn:  # outside any request: a root connect span and root statements
            conn.execute(text("CREATE TABLE leads (id INTEGER PRIMARY KEY, name VARCHAR(50))"))
            conn.commit()
        with tracer.start_as_current_span("request"):
            with a.connect() as conn:
                conn.execute(text("INSERT INTO leads (name) VALUES (:n)"), {"n": "ada"})
                conn.execute(text("INSERT INTO leads (name) VALUES (:n)"), [{"n": "bob"}, {"n": "cy"}])  # many
                for _ in range(2):  # the second one from the memo
                    conn.execute(text("SELECT name FROM leads WHERE id = 1")).all()
                conn.execute(text("/* a leading comment */ SELECT count(*) FROM leads")).all()
                conn.execute(text("  \n SELECT 1")).all()
                with pytest.raises(OperationalError):
                    conn.execute(text("SELECT * FROM missing_table"))
                conn.rollback()
            for _ in range(2):
                with b.connect() as conn:  # another engine, another URL (no database)
                    conn.execute(text("SELECT 1")).all()
            with Session(a) as session:
                session.add(_Lead(name="dee"))
                session.commit()
                session.execute(select(_Lead).where(_Lead.name == "dee")).scalars().all()
                session.get(_Lead, 1)
            with suppress_instrumentation(), a.connect() as conn:
                conn.execute(text("SELECT 2")).all()
            token = context_api.attach(context_api.set_value("suppress_instrumentation", True))
            try:
                with a.connect() as conn:
                    conn.execute(text("SELECT 3")).all()
            finally:
                context_api.detach(token)
    finally:
        a.dispose()
        b.dispose()


context_tracer: list[Any] = []


def _run(tmp_path: Path, provider_class: type[TracerProvider], opt_in: str, commenter: tuple[bool, bool],
         fast: bool, *, plain_meters: bool = False) -> tuple[list[Any], list[Any]]:
    db = tmp_path / "crm.db"
    db.unlink(missing_ok=True)
    _Stability._initialized, _Stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING = False, {}
    if fast:
        assert install_sqlalchemy_fast_path()
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    provider = provider_class(id_generator=_Ids())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    context_tracer[:] = [provider.get_tracer("test")]
    instrumentor = SQLAlchemyInstrumentor()
    meters = MeterProvider(metric_readers=[reader])
    instrumentor.instrument(tracer_provider=provider,
                            meter_provider=meters if plain_meters else CorrectingMeterProvider(meters),
                            enable_commenter=commenter[0], commenter_options={},
                            enable_attribute_commenter=commenter[1])
    try:
        _workload(db)
    finally:
        instrumentor.uninstrument()
        uninstall_sqlalchemy_fast_path()
    spans = [(s.name, s.kind, s.context.trace_id, s.context.span_id, s.parent.span_id if s.parent else None,
              tuple(s.attributes.items()), s.status.status_code, s.status.description,
              tuple((e.name, tuple(e.attributes.items())) for e in s.events), len(s.links),
              s.instrumentation_scope) for s in exporter.get_finished_spans()]
    data = reader.get_metrics_data()
    points = [(metric.name, metric.unit, metric.description,
               sorted((tuple(sorted(p.attributes.items())), getattr(p, "value", None))
                      for p in metric.data.data_points))
              for rm in (data.resource_metrics if data else ()) for sm in rm.scope_metrics for metric in sm.metrics]
    return spans, points


@pytest.mark.parametrize("opt_in", ["", "database", "database/dup", "http,database"])
@pytest.mark.parametrize("provider_class", [TracerProvider, FastTracerProvider])
def test_the_same_spans_and_metric_points_as_upstream(tmp_path: Path, restore: None, monkeypatch: pytest.MonkeyPatch,
                                                      opt_in: str, provider_class: type[TracerProvider]) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)
    upstream = _run(tmp_path, provider_class, opt_in, (False, False), fast=False)
    fast = _run(tmp_path, provider_class, opt_in, (False, False), fast=True)
    assert fast == upstream
    spans = upstream[0]
    names = [span[0] for span in spans]
    # The workload is what it says: connect spans, statements with their operation, an error, no
    # span for the suppressed statements, two engines.
    assert names.count("connect") == 6  # root, request, engine b twice, the session before and after commit
    assert any(span[6].name == "ERROR" and "missing_table" in (span[7] or "") for span in spans)
    assert not any("SELECT 2" in str(span[5]) or "SELECT 3" in str(span[5]) for span in spans)
    assert {name.split(" ", 1)[-1] for name in names if name.startswith("SELECT")} >= {str(tmp_path / "crm.db"),
                                                                                        "SELECT"}
    assert {point[0] for point in upstream[1]} == {"db.client.connection.count"}


@pytest.mark.parametrize("commenter", [(True, False), (True, True)])
def test_sqlcommenter_spans_are_upstreams(tmp_path: Path, restore: None, monkeypatch: pytest.MonkeyPatch,
                                          commenter: tuple[bool, bool]) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    upstream = _run(tmp_path, TracerProvider, "", commenter, fast=False)
    fast = _run(tmp_path, TracerProvider, "", commenter, fast=True)
    assert fast == upstream
    if commenter[1]:
        assert any("traceparent" in str(span[5]) for span in upstream[0])


class _Unsampled(TracerProvider):
    """Nothing sampled: the hooks' non-recording path (no attributes, the span still ended)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(sampler=ALWAYS_OFF, **kwargs)


def test_unsampled_statements_make_the_same_metric_points_and_no_spans(tmp_path: Path, restore: None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    upstream = _run(tmp_path, _Unsampled, "", (False, False), fast=False)
    assert _run(tmp_path, _Unsampled, "", (False, False), fast=True) == upstream
    assert upstream[0] == [] and upstream[1]


def test_a_broken_fast_path_fails_the_differential_test(tmp_path: Path, restore: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: a fast path that drops one attribute is caught."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "database")
    upstream = _run(tmp_path, TracerProvider, "database", (False, False), fast=False)
    real_derive = sqlalchemy_fast._Collector.set_attribute

    def drop_operation(self: Any, key: str, value: Any) -> None:
        if key != "db.operation.name":
            real_derive(self, key, value)

    monkeypatch.setattr(sqlalchemy_fast._Collector, "set_attribute", drop_operation)
    broken = _run(tmp_path, TracerProvider, "database", (False, False), fast=True)
    assert broken != upstream


def test_pool_events_move_the_same_counts_by_one_transfer_or_keep_upstreams_path(
        tmp_path: Path, restore: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """otel_crm's in-process connection count moves by one transfer per checkout and checkin (the
    differential tests above); another meter provider's counter keeps upstream's two recordings."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    upstream = _run(tmp_path, TracerProvider, "", (False, False), fast=False, plain_meters=True)
    assert _run(tmp_path, TracerProvider, "", (False, False), fast=True, plain_meters=True) == upstream
    assert {point[0] for point in upstream[1]} == {"db.client.connections.usage"}
    monkeypatch.setattr(sqlalchemy_fast.Transfer, "__call__", lambda self, amount: None)  # a broken move
    broken = _run(tmp_path, TracerProvider, "", (False, False), fast=True)
    assert broken[1] != _run(tmp_path, TracerProvider, "", (False, False), fast=False)[1]


# --- the cursor-dependent vendors, with stand-in connections (no server here) ---------------------

def _tracer(vendor: str, mode: Any) -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=_Ids())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer: Any = object.__new__(engine.EngineTracer)
    tracer.__dict__.update(tracer=provider.get_tracer("t"), vendor=vendor, enable_commenter=False,
                           commenter_options={}, enable_attribute_commenter=False,
                           _sem_conv_opt_in_mode_db=mode, _sem_conv_opt_in_mode_http=mode,
                           _leading_comment_remover=engine.re.compile(r"^/\*.*?\*/"))
    return tracer, exporter


def _conn(url: str) -> Any:
    return SimpleNamespace(engine=SimpleNamespace(url=make_url(url)))


def _cursors(vendor: str) -> list[Any]:
    if vendor == "postgresql":
        return [SimpleNamespace(connection=SimpleNamespace(info=SimpleNamespace(dbname=name, host=host, port=5432)))
                for name, host in (("crm", "db1"), ("other", "db1"), ("crm", "/var/run/pg"))]
    return [SimpleNamespace(connection=SimpleNamespace(database=name)) for name in ("crm", "other")]


@pytest.mark.parametrize(("vendor", "urls"), [
    ("postgresql", ["postgresql://app@db1:5432/crm", "postgresql:///crm"]),
    ("mysql", ["mysql://app@db1:3306/crm", "mysql:///crm"]),
    ("mssql", ["mssql://app@db1:1433/crm", "mssql://app@db1/"]),
    ("oracle", ["oracle://app@db1:1521/crm", "oracle://app@db2/other"]),
])
def test_cursor_dependent_vendors_get_upstreams_spans(restore: None, vendor: str, urls: list[str]) -> None:
    results = []
    conns = [_conn(url) for url in urls]  # one URL object per engine, as in an app
    for fast in (False, True):
        if fast:
            assert install_sqlalchemy_fast_path()
        hook: Callable[..., Any] = engine.EngineTracer._before_cur_exec
        assert (hook is UPSTREAM_HOOK) is not fast
        spans = []
        for mode in (_semconv._StabilityMode.DEFAULT, _semconv._StabilityMode.DATABASE_DUP,
                     _semconv._StabilityMode.DATABASE):  # one install: the modes are in the memo keys
            tracer, exporter = _tracer(vendor, mode)
            for conn in conns:
                for cursor in _cursors(vendor) * 2:  # a database name read from the cursor is in the memo key
                    context = SimpleNamespace()
                    assert hook(tracer, conn, cursor, "SELECT 1 FROM t", {}, context, False) == ("SELECT 1 FROM t", {})
                    context._otel_span.end()
            spans += [(s.name, tuple(s.attributes.items())) for s in exporter.get_finished_spans()]
        uninstall_sqlalchemy_fast_path()
        results.append(spans)
    assert results[0] == results[1]
    assert len({name for name, _ in results[0]}) > 1


# --- bounds, guard, fallback ------------------------------------------------------------------------

def test_the_memos_are_bounded_and_long_statements_are_never_kept(restore: None) -> None:
    assert install_sqlalchemy_fast_path()
    tracer, _ = _tracer("sqlite", _semconv._StabilityMode.DEFAULT)
    conn, hook = _conn("sqlite:///crm.db"), engine.EngineTracer._before_cur_exec
    for i in range(sqlalchemy_fast._statements.limit + 10):
        hook(tracer, conn, None, f"SELECT {i}", {}, SimpleNamespace(), False)
        assert len(sqlalchemy_fast._statements) <= sqlalchemy_fast._statements.limit
    sqlalchemy_fast._statements.clear()
    long = "SELECT '" + "x" * sqlalchemy_fast._MAX_STATEMENT + "'"
    context = SimpleNamespace()
    hook(tracer, conn, None, long, {}, context, False)
    assert not sqlalchemy_fast._statements
    assert context._otel_span.attributes["db.statement"] == long


@pytest.mark.parametrize("change", ["engine.py", "is_instrumentation_enabled", "stability"])
def test_other_instrumentation_code_keeps_upstreams_path(restore: None, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture, change: str) -> None:
    if change == "engine.py":
        monkeypatch.setattr(sqlalchemy_fast, "_ENGINE_SHA256", "0" * 64)
    elif change == "is_instrumentation_enabled":
        monkeypatch.setattr(engine, "is_instrumentation_enabled", lambda: True)
    else:
        monkeypatch.setattr(_Stability, "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", None)
    with caplog.at_level(logging.WARNING, "otel_crm"):
        assert not install_sqlalchemy_fast_path()
    assert engine.EngineTracer._before_cur_exec is UPSTREAM_HOOK
    assert not sqlalchemy_fast._installed
    assert "its own (slower) path is used" in caplog.text


def test_the_check_is_cheap_at_startup(restore: None) -> None:
    """It runs when the app imports SQLAlchemy: a file hash and a few attribute reads, no parsing."""
    import time

    started = time.process_time()
    for _ in range(20):
        assert install_sqlalchemy_fast_path()
        uninstall_sqlalchemy_fast_path()
    assert (time.process_time() - started) / 20 < 0.005


def test_install_and_uninstall_replace_and_restore_upstreams_code(restore: None) -> None:
    originals = {name: getattr(engine, name) for name in sqlalchemy_fast._REPLACED}
    pool_hooks = (engine.EngineTracer._pool_checkout, engine.EngineTracer._pool_checkin)
    assert install_sqlalchemy_fast_path() and install_sqlalchemy_fast_path()  # idempotent
    assert (engine.EngineTracer._pool_checkout, engine.EngineTracer._pool_checkin) != pool_hooks
    assert engine.EngineTracer._before_cur_exec is not UPSTREAM_HOOK
    assert all(getattr(engine, name) is not value for name, value in originals.items())
    uninstall_sqlalchemy_fast_path()
    assert engine.EngineTracer._before_cur_exec is UPSTREAM_HOOK
    assert (engine.EngineTracer._pool_checkout, engine.EngineTracer._pool_checkin) == pool_hooks
    assert {name: getattr(engine, name) for name in sqlalchemy_fast._REPLACED} == originals


def test_an_internal_error_falls_back_to_upstreams_path(restore: None, no_reraise: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert install_sqlalchemy_fast_path()

    class Broken(dict[Any, Any]):
        def get(self, key: Any, default: Any = None) -> Any:
            raise RuntimeError("memo")

    monkeypatch.setattr(sqlalchemy_fast, "_statements", Broken())
    tracer, exporter = _tracer("sqlite", _semconv._StabilityMode.DEFAULT)
    context = SimpleNamespace()
    result = engine.EngineTracer._before_cur_exec(tracer, _conn("sqlite:///crm.db"), None, "SELECT 1", {}, context,
                                                  False)
    assert result == ("SELECT 1", {})
    context._otel_span.end()
    assert [s.name for s in exporter.get_finished_spans()] == ["SELECT crm.db"]


# --- the distro -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fast_spans", [True, False])
def test_the_distro_installs_it_before_the_instrumentation_loads_unless_fast_spans_is_off(
        restore: None, fast_spans: bool) -> None:
    from otel_crm._internal.runtime import Runtime, set_current_runtime
    from otel_crm._internal.settings import resolve_settings
    from otel_crm.distro import CrmDistro

    seen: list[bool] = []

    class EntryPoint:
        name = "sqlalchemy"

        def load(self) -> object:
            class Instrumentor:
                def instrument(self, **_: object) -> None:
                    seen.append(engine.EngineTracer._before_cur_exec is not UPSTREAM_HOOK)

            return Instrumentor

    previous = set_current_runtime(Runtime(resolve_settings({}, fast_spans=fast_spans)))
    try:
        CrmDistro().load_instrumentor(EntryPoint())  # SQLAlchemy is imported: it loads at once
    finally:
        if previous is not None:
            set_current_runtime(previous)
        else:
            from otel_crm._internal.runtime import clear_current_runtime

            clear_current_runtime()
    assert seen == [fast_spans]


def test_a_statements_attributes_are_set_in_one_call_only_when_that_is_the_same() -> None:
    one_call = sqlalchemy_fast._as_one_call
    assert list((one_call([("b", 1), ("a", 1.5), ("c", True), ("d", "x")]) or {}).items()) == [
        ("b", 1), ("a", 1.5), ("c", True), ("d", "x")]
    for items in ([("a", None)], [("a", ["list"])], [("", 1)], [(3, 1)], [("a", b"bytes")],
                  [("a", "x"), ("a", "y")]):  # a key set twice: near a count limit the drops could differ
        assert one_call(items) is None  # cleaned or warned about: the calls stay one by one
