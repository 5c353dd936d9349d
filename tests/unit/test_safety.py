"""Never break the host app: internal errors are swallowed, logged once and counted (re-raised
under pytest so our own bugs surface)."""

from __future__ import annotations

import logging

import pytest

from otel_crm._internal import safety
from otel_crm._internal.safety import error_type, guard, report_internal_error


def test_under_pytest_our_bugs_surface() -> None:
    with pytest.raises(ZeroDivisionError), guard("test-surface"):
        1 / 0  # noqa: B018


def test_in_production_a_failure_is_swallowed_and_logged_once(
        no_reraise: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        for _ in range(3):
            with guard("test-swallow"):
                raise KeyError("boom")
    lines = [r.getMessage() for r in caplog.records if "test-swallow" in r.getMessage()]
    assert len(lines) == 1, "one line per component and error type, however often it happens"


def test_a_guard_never_swallows_what_is_not_an_error(no_reraise: None) -> None:
    with pytest.raises(KeyboardInterrupt), guard("test-interrupt"):
        raise KeyboardInterrupt


def test_the_reporter_reraises_our_bugs_under_pytest_only() -> None:
    bug = RuntimeError("instrumentation bug")
    with pytest.raises(RuntimeError) as raised:
        report_internal_error("test-report", bug)
    assert raised.value is bug
    safety.reraise_internal_errors(False)
    try:
        report_internal_error("test-report", bug)  # production: recorded, never raised
    finally:
        safety.reraise_internal_errors(None)


def test_failures_from_outside_are_recorded_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_crm"):
        report_internal_error("test-outside", LookupError("the app's resolver"), raise_in_tests=False)
        report_internal_error("test-outside", LookupError("again"), raise_in_tests=False)
    assert sum("test-outside" in r.getMessage() for r in caplog.records) == 1


def test_one_log_line_per_component_and_type_also_when_threads_race(no_reraise: None) -> None:
    import threading

    errors = [ValueError(str(i)) for i in range(200)]
    with _Capture() as lines:
        threads = [threading.Thread(target=report_internal_error, args=("test-race", e)) for e in errors]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sum("test-race" in line for line in lines) == 1


class _Capture(logging.Handler):
    def __enter__(self) -> list[str]:
        self.lines: list[str] = []
        logging.getLogger("otel_crm").addHandler(self)
        return self.lines

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("otel_crm").removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class QuotaExceeded(Exception):
    pass


def test_error_type_is_the_qualified_class_name() -> None:
    assert error_type(ValueError()) == "ValueError"
    assert error_type(QuotaExceeded()) == f"{__name__}.QuotaExceeded"
