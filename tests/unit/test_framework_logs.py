"""The development servers' request lines are muted while our access line is on; their other
lines pass."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from werkzeug._internal import _log as werkzeug_log

from otel_crm._internal.access import ACCESS_LOGGER
from otel_crm._internal.framework_logs import mute_server_request_lines, unmute_server_request_lines
from otel_crm._internal.logs import install_log_handlers, remove_log_handlers
from otel_crm._internal.settings import resolve_settings


class _Seen(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def seen() -> Iterator[_Seen]:
    handler = _Seen()
    loggers = [logging.getLogger(name) for name in ("werkzeug", "django.server")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler
    unmute_server_request_lines()
    for logger in loggers:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_werkzeug_request_line_muted_startup_line_kept(seen: _Seen) -> None:
    mute_server_request_lines()
    # exactly what werkzeug's WSGIRequestHandler.log() passes for a request line
    werkzeug_log("info", '127.0.0.1 - - [30/Nov/2026 20:00:00] "%s" %s %s\n', "GET / HTTP/1.1", "200", "-")
    werkzeug_log("info", " * Running on %s", "http://127.0.0.1:5000")
    werkzeug_log("error", "Error on request:\n%s", "Traceback ...")
    assert seen.messages == [" * Running on http://127.0.0.1:5000", "Error on request:\nTraceback ..."]


def test_django_runserver_request_line_muted_other_lines_kept(seen: _Seen) -> None:
    mute_server_request_lines()
    server = logging.getLogger("django.server")
    server.warning('"%s" %s %s', "GET /x HTTP/1.1", "404", "179", extra={"status_code": 404})
    server.info("- Broken pipe from %s", ("127.0.0.1", 5555))
    assert seen.messages == ["- Broken pipe from ('127.0.0.1', 5555)"]


def test_muted_only_while_our_access_line_is_on(seen: _Seen) -> None:
    def request_line() -> None:
        werkzeug_log("info", '127.0.0.1 - - [x] "%s" %s %s', "GET / HTTP/1.1", "200", "-")

    root = logging.Logger("isolated-root-fw")
    access = logging.getLogger(ACCESS_LOGGER)
    before = access.level
    try:
        install_log_handlers(resolve_settings({}, logs_exporter=["none"], access_log=False), None, root=root)
        request_line()
        remove_log_handlers(root)
    finally:
        access.setLevel(before)  # access_log=False mutes the (global) access logger
    install_log_handlers(resolve_settings({}, logs_exporter=["none"]), None, root=root)
    request_line()
    remove_log_handlers(root)
    request_line()
    assert len(seen.messages) == 2  # off, then on (muted), then removed
