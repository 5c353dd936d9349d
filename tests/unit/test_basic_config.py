"""An app's logging.basicConfig() after otel_crm installed its stdout handler."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from otel_crm._internal.logs import install_log_handlers, remove_log_handlers
from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.stdout import LazyFlushStreamHandler


class _Scrubber:
    @staticmethod
    def scrub_text(text: str) -> str:
        return text.replace("hunter2", "[REDACTED]")


@pytest.fixture
def ours() -> Iterator[LazyFlushStreamHandler]:
    """otel_crm's handlers on the real root (basicConfig only looks there), the root restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = []
    added = install_log_handlers(resolve_settings({}, logs_exporter=["none"], log_format="json"), None,
                                 scrubber=_Scrubber())
    stdout = next(h for h in added if isinstance(h, LazyFlushStreamHandler))
    stdout.setStream(io.StringIO())
    yield stdout
    remove_log_handlers()
    root.handlers, root.level = saved_handlers, saved_level


def _only_ours(stdout: LazyFlushStreamHandler) -> None:
    """pytest's log capture adds its handlers to the root for each test phase: without them, the
    root holds just otel_crm's handler, as in an app."""
    logging.getLogger().handlers = [stdout]


def _written(handler: LazyFlushStreamHandler) -> list[str]:
    handler.flush()
    return handler.stream.getvalue().splitlines()  # type: ignore[attr-defined]


def test_level_and_format_take_effect_and_stay_scrubbed(ours: LazyFlushStreamHandler) -> None:
    _only_ours(ours)
    logging.basicConfig(level=logging.DEBUG, format="APP %(levelname)s: %(message)s")
    logging.getLogger("app.x").debug("password=%s", "hunter2")
    assert logging.getLogger().level == logging.DEBUG
    [line] = _written(ours)
    assert line == "APP DEBUG: password=[REDACTED]"


def test_level_alone_keeps_our_format(ours: LazyFlushStreamHandler) -> None:
    _only_ours(ours)
    logging.basicConfig(level=logging.DEBUG)
    logging.getLogger("app.y").debug("hello")
    [line] = _written(ours)
    assert line.startswith("{") and '"message": "hello"' in line


def test_a_destination_it_cannot_honour_gets_one_line(ours: LazyFlushStreamHandler) -> None:
    _only_ours(ours)
    logging.basicConfig(filename="/nonexistent/app.log", level=logging.INFO)
    lines = _written(ours)
    assert len(lines) == 1 and "basicConfig(filename=...)" in lines[0] and "force=True" in lines[0]
    assert logging.getLogger().handlers == [ours]


def test_force_hands_the_root_to_the_app(ours: LazyFlushStreamHandler) -> None:
    _only_ours(ours)
    stream = io.StringIO()
    logging.basicConfig(stream=stream, force=True, format="%(message)s")
    logging.getLogger("app.z").warning("mine")
    assert stream.getvalue() == "mine\n" and ours not in logging.getLogger().handlers


def test_someone_elses_handler_keeps_the_stdlib_behaviour(ours: LazyFlushStreamHandler) -> None:
    _only_ours(ours)
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    logging.basicConfig(level=logging.DEBUG, format="X %(message)s")
    assert ours.formatter is not None and ours.formatter._fmt != "X %(message)s"
    assert logging.getLogger().level != logging.DEBUG
    logging.getLogger().removeHandler(other)


def test_removing_our_handlers_restores_basic_config() -> None:
    original = logging.basicConfig
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []
    try:
        install_log_handlers(resolve_settings({}, logs_exporter=["none"]), None)
        assert logging.basicConfig is not original
        remove_log_handlers()
        assert logging.basicConfig is original
    finally:
        root.handlers = saved
