"""A cheaper per-statement and per-connect path for opentelemetry-instrumentation-sqlalchemy, with
the same spans (names, kinds, attributes in the same order, status, events).

Per statement, the instrumentation's ``EngineTracer._before_cur_exec`` derives the span name and
attributes from the statement text, the engine's URL and the stability modes: the same inputs give
the same outputs, yet it recomputes them every time (two regex subs, the URL helpers, a dict, the
mode checks) and wraps the attribute calls in ``use_span``. Here they are derived once, by the
instrumentation's own functions (so they are its outputs, not a copy of its logic), and memoised:

- key: the tracer (its vendor and stability modes are fixed when it is built), the URL object (by
  identity: the memo holds it, so its id cannot be reused), the statement text, and the database
  name where the vendor reads it from the cursor (PostgreSQL, MySQL, MSSQL); a PostgreSQL engine
  whose URL has no host takes its attributes from the live cursor and keeps the upstream path;
- bounded: 1,024 entries (:class:`Memo`), and statements longer than ``_MAX_STATEMENT`` (4,096
  characters) are never kept, so at most ~4 MB of statement text; the text can carry literals: it
  is held in this process only, and a statement's span carries what upstream's would;
- the attributes are set with one ``set_attributes`` when every value is a str, int, float or bool
  under a distinct non-empty str key (the same span as the one-by-one calls, which stay otherwise);
- ``use_span`` is skipped: it only makes the span current while its attributes are set, which
  nothing observes (with sqlcommenter on, the comment reads the current span: that path is
  upstream's own, unchanged).

The pool's checkout and checkin events each make two recordings of the connection count (idle -1,
used +1, and back), each a dict merge, a key and a lock: here one suppression check and one
:meth:`LocalUpDownCounter.transfer <otel_crm._internal.local_sums.LocalUpDownCounter.transfer>`
(the same sums, rows made in the same order), when the counter is otel_crm's in-process one (the
distro's meter provider makes it so); another meter provider's counter keeps upstream's path.

Three helpers engine.py calls per statement, connect and pool event are replaced in its namespace
by cheaper equivalents: ``is_instrumentation_enabled`` (one context read, not two),
``_get_attributes_from_url`` (memoised by URL object and modes; a fresh dict each call) and the
stability-mode lookups (no lock once initialised). The ``Engine.connect`` wrapper itself stays
upstream's, so a failed connect's exception event (its stack trace) is unchanged.

Applied only when the replaced upstream code is the code this was built against (a fingerprint of
engine.py, and what the two helpers from other modules read); otherwise upstream's code is kept
and one warning says so. An internal error falls back to upstream's code for that call (reported
once, counted). ``OTEL_CRM_FAST_SPANS=false`` keeps upstream's code (the distro does not install it).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final

from opentelemetry import context as context_api
from opentelemetry.trace import SpanKind

from otel_crm._internal.local_sums import LocalUpDownCounter, Transfer
from otel_crm._internal.memo import Memo
from otel_crm._internal.safety import report_internal_error

__all__ = ["install_sqlalchemy_fast_path", "uninstall_sqlalchemy_fast_path"]

_log = logging.getLogger("otel_crm")
_PACKAGE: Final = "opentelemetry.instrumentation.sqlalchemy"
_COMPONENT: Final = "sqlalchemy_fast_path"
_MAX_STATEMENT: Final = 4096  # longer statements are derived every time, never held
_CURSOR_VENDORS: Final = ("postgres", "mysql", "mssql", "sqlserver")  # db name read from the cursor
_CLIENT: Final = SpanKind.CLIENT

# sha256 of the instrumentation's engine.py (0.66b1): the hook replaced, the helpers whose outputs
# are memoised, and every caller of the three helpers replaced live there. Any change: upstream's
# path stays. (The whole file: reading and hashing it costs ~0.1 ms at startup, where
# inspect.getsource of each function cost ~20 ms.) The helpers from other modules are checked by
# what they read (`_same_helpers`).
_ENGINE_SHA256: Final = "fdea18db48702943a58d9be81a16ce9e3cab718f49ec479e6d3967daac34a6e7"
_ENABLED_NAMES: Final = ("context", "get_value", "_SUPPRESS_INSTRUMENTATION_KEY", "_SUPPRESS_INSTRUMENTATION_KEY_PLAIN")
_MODE_NAMES: Final = ("_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", "get", "_StabilityMode", "DEFAULT")

_get_current = context_api.get_current
# (the URL, the span name, the attributes: one set_attributes argument, or the set_attribute calls in order)
_Entry = tuple[Any, str, "dict[str, Any] | tuple[tuple[str, Any], ...]"]
_statements: Memo[tuple[Any, int, str, Any], _Entry] = Memo(1024)
_urls: Memo[tuple[int, Any, Any], tuple[Any, dict[str, Any], bool]] = Memo(64)
_cursor_vendor: Memo[str, bool] = Memo(64)
_installed: dict[str, Any] = {}  # name -> the upstream object it replaced (for uninstall)


def _modules() -> tuple[ModuleType, ModuleType, ModuleType]:
    return (importlib.import_module(_PACKAGE + ".engine"),
            importlib.import_module("opentelemetry.instrumentation.utils"),
            importlib.import_module("opentelemetry.instrumentation._semconv"))


def _engine_matches(engine: ModuleType) -> bool:
    try:
        with open(engine.__file__ or "", "rb") as source:
            return hashlib.sha256(source.read()).hexdigest() == _ENGINE_SHA256
    except Exception:  # no source (a .pyc-only install): not the expected code
        return False


def _same_helpers(engine: ModuleType, utils: ModuleType, semconv: ModuleType) -> bool:
    """The two helpers replaced from other modules read what their replacements read."""
    stability = semconv._OpenTelemetrySemanticConventionStability
    try:
        return (engine.is_instrumentation_enabled is utils.is_instrumentation_enabled
                and utils.is_instrumentation_enabled.__code__.co_names == _ENABLED_NAMES
                and engine._OpenTelemetrySemanticConventionStability is stability
                and stability._get_opentelemetry_stability_opt_in_mode.__func__.__code__.co_names == _MODE_NAMES
                and isinstance(stability._initialized, bool)
                and isinstance(stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING, dict))
    except Exception:
        return False


class _Collector:
    """Stands in for the span while the instrumentation's own method sets the attributes: it
    records them, in order, for the memo."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []

    def set_attribute(self, key: str, value: Any) -> None:
        self.items.append((key, value))


def _as_one_call(items: list[tuple[str, Any]]) -> dict[str, Any] | None:
    """The `set_attribute` calls as one `set_attributes` argument, when they give the same span: every
    key a non-empty str set once, every value a str, int, float or bool (a str over the length limit
    is truncated by either; only the order of the SDK's warnings could differ, near the count limit).
    Else None: the calls are made one by one."""
    merged: dict[str, Any] = {}
    for key, value in items:
        if type(key) is not str or not key or key in merged or type(value) not in (str, int, float, bool):
            return None
        merged[key] = value
    return merged


def _is_cursor_vendor(vendor: str) -> bool:
    found = _cursor_vendor.get(vendor)
    if found is None:
        lowered = vendor.lower() if vendor else ""
        found = _cursor_vendor.put(vendor, any(part in lowered for part in _CURSOR_VENDORS))
    return found


def _make_before_cur_exec(engine: ModuleType, utils: ModuleType, upstream: Callable[..., Any],
                          from_url: Callable[..., Any]) -> Callable[..., Any]:
    from_cursor = engine._get_attributes_from_cursor_or_conn
    db_name_of = engine._get_db_name_from_cursor_or_conn
    key_a, key_b = utils._SUPPRESS_INSTRUMENTATION_KEY, utils._SUPPRESS_INSTRUMENTATION_KEY_PLAIN

    def derive(tracer: Any, conn: Any, cursor: Any, statement: str, *, url: Any,
               db_name: Any) -> _Entry:
        # The steps of upstream's _before_cur_exec up to the span, by its own functions.
        attrs, found = from_url(url, tracer._sem_conv_opt_in_mode_db, tracer._sem_conv_opt_in_mode_http)
        if not found:
            attrs = from_cursor(tracer.vendor, conn, cursor, attrs, tracer._sem_conv_opt_in_mode_db,
                                tracer._sem_conv_opt_in_mode_http)
        name = tracer._operation_name(db_name, statement)
        collector = _Collector()
        tracer._set_db_client_span_attributes(collector, statement, db_name, attrs)
        one_call = _as_one_call(collector.items)
        return url, name, one_call if one_call is not None else tuple(collector.items)

    def _before_cur_exec(self: Any, conn: Any, cursor: Any, statement: Any,  # noqa: PLR0917 - the event's
                         params: Any, context: Any, executemany: Any) -> Any:
        if self.enable_commenter or type(statement) is not str:  # the comment reads the current span
            return upstream(self, conn, cursor, statement, params, context, executemany)
        current = _get_current()
        if current.get(key_a) or current.get(key_b):  # is_instrumentation_enabled()
            return statement, params
        try:
            url = conn.engine.url
            vendor = self.vendor
            if _is_cursor_vendor(vendor):
                if vendor == "postgresql" and not url.host:  # attributes from the live cursor
                    return upstream(self, conn, cursor, statement, params, context, executemany)
                db_name = db_name_of(vendor, conn, cursor)
                key = (self, id(url), statement, db_name)
            else:
                db_name, key = None, (self, id(url), statement, None)
            entry = _statements.get(key)
            if entry is None or entry[0] is not url:
                if not _is_cursor_vendor(vendor):
                    db_name = db_name_of(vendor, conn, cursor)  # the URL's database: keyed by the URL
                entry = derive(self, conn, cursor, statement, url=url, db_name=db_name)
                if len(statement) <= _MAX_STATEMENT:
                    _statements.put(key, entry)
        except Exception as exc:
            report_internal_error(_COMPONENT, exc)
            return upstream(self, conn, cursor, statement, params, context, executemany)
        span = self.tracer.start_span(entry[1], kind=_CLIENT)
        if span.is_recording():
            attributes = entry[2]
            if type(attributes) is dict:  # plain values: one set_attributes is those set_attribute calls
                span.set_attributes(attributes)
            else:
                set_attribute = span.set_attribute
                for item in attributes:
                    set_attribute(item[0], item[1])
        context._otel_span = span
        return statement, params

    return _before_cur_exec


_MOVES: Final = "_otel_crm_pool_moves"  # on the EngineTracer: (checkout, checkin) transfers, or ()


def _moves(tracer: Any) -> tuple[Transfer, ...]:
    moves: tuple[Transfer, ...] | None = tracer.__dict__.get(_MOVES)
    if moves is None:
        counter = tracer.connections_usage
        if type(counter) is LocalUpDownCounter:
            idle, used = {**tracer._engine_attrs, "state": "idle"}, {**tracer._engine_attrs, "state": "used"}
            moves = (counter.transfer(idle, used), counter.transfer(used, idle))
        else:
            moves = ()
        setattr(tracer, _MOVES, moves)
    return moves


def _make_pool_hooks(enabled: Callable[[], bool], checkout: Callable[..., Any],
                     checkin: Callable[..., Any]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def _pool_checkout(self: Any, dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
        moves = _moves(self)
        if not moves:
            return checkout(self, dbapi_connection, connection_record, connection_proxy)  # type: ignore[no-any-return]
        if enabled():
            moves[0](1)  # idle -1, used +1
        return None

    def _pool_checkin(self: Any, dbapi_connection: Any, connection_record: Any) -> None:
        moves = _moves(self)
        if not moves:
            return checkin(self, dbapi_connection, connection_record)  # type: ignore[no-any-return]
        if enabled():
            moves[1](1)  # used -1, idle +1
        return None

    return _pool_checkout, _pool_checkin


class _Stability:
    """The instrumentation's ``_OpenTelemetrySemanticConventionStability`` as engine.py uses it
    (``_initialize``, ``_get_opentelemetry_stability_opt_in_mode``), without the lock once it is
    initialised: the real class's state, read where it lives (a test that re-initialises it is seen)."""

    def __init__(self, real: Any, default: Any) -> None:
        self._real, self._default = real, default

    def _initialize(self) -> None:
        if not self._real._initialized:
            self._real._initialize()

    def _get_opentelemetry_stability_opt_in_mode(self, signal_type: Any) -> Any:
        return self._real._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING.get(signal_type, self._default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _make_enabled(utils: ModuleType) -> Callable[[], bool]:
    key_a, key_b = utils._SUPPRESS_INSTRUMENTATION_KEY, utils._SUPPRESS_INSTRUMENTATION_KEY_PLAIN

    def is_instrumentation_enabled() -> bool:
        # utils.is_instrumentation_enabled with one context read instead of two get_value calls.
        current = _get_current()
        return not (current.get(key_a) or current.get(key_b))

    return is_instrumentation_enabled


def _make_from_url(upstream: Callable[..., Any]) -> Callable[..., Any]:
    def _get_attributes_from_url(url: Any, mode_db: Any, mode_http: Any) -> tuple[dict[str, Any], bool]:
        # A fresh dict every time: callers add to it.
        key = (id(url), mode_db, mode_http)
        entry = _urls.get(key)
        if entry is None or entry[0] is not url:
            attrs, found = upstream(url, mode_db, mode_http)
            entry = _urls.put(key, (url, dict(attrs), found))
        return entry[1].copy(), entry[2]

    return _get_attributes_from_url


_REPLACED: Final = ("is_instrumentation_enabled", "_OpenTelemetrySemanticConventionStability",
                    "_get_attributes_from_url")


def install_sqlalchemy_fast_path() -> bool:
    """Replace the statement and pool hooks (on ``EngineTracer``: engines traced from now on) and three helpers
    engine.py calls per statement, connect and pool event (its module globals). False, with one
    warning, when the installed instrumentation is not the code this was built for."""
    if _installed:
        return True
    engine, utils, semconv = _modules()
    if not _engine_matches(engine) or not _same_helpers(engine, utils, semconv):
        _log.warning("otel_crm: opentelemetry-instrumentation-sqlalchemy is not the version otel_crm's cheaper "
                     "SQL span path was built for; its own (slower) path is used")
        return False
    upstream = engine.EngineTracer._before_cur_exec
    _installed.update({name: getattr(engine, name) for name in _REPLACED}, before_cur_exec=upstream)
    from_url = _make_from_url(engine._get_attributes_from_url)
    for name, value in zip(_REPLACED, (_make_enabled(utils), _Stability(
            semconv._OpenTelemetrySemanticConventionStability, semconv._StabilityMode.DEFAULT), from_url), strict=True):
        setattr(engine, name, value)
    engine.EngineTracer._before_cur_exec = _make_before_cur_exec(engine, utils, upstream, from_url)
    tracer_class = engine.EngineTracer
    _installed.update(pool_checkout=tracer_class._pool_checkout, pool_checkin=tracer_class._pool_checkin)
    tracer_class._pool_checkout, tracer_class._pool_checkin = _make_pool_hooks(
        engine.is_instrumentation_enabled, tracer_class._pool_checkout, tracer_class._pool_checkin)
    return True


def uninstall_sqlalchemy_fast_path() -> None:
    """Put upstream's code back (for engines traced from now on; the helpers at once)."""
    if not _installed:
        return
    engine, _, _ = _modules()
    engine.EngineTracer._before_cur_exec = _installed.pop("before_cur_exec")
    engine.EngineTracer._pool_checkout = _installed.pop("pool_checkout")
    engine.EngineTracer._pool_checkin = _installed.pop("pool_checkin")
    for name in _REPLACED:
        setattr(engine, name, _installed.pop(name))
    _statements.clear()
    _urls.clear()
