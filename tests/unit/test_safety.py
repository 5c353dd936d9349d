"""Never break the host app: internal errors are swallowed, logged once and counted (re-raised
under pytest so our own bugs surface)."""

from __future__ import annotations

import logging

import pytest

from otel_crm._internal.safety import error_type, guard, guarded


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


def test_guarded_returns_the_default_instead_of_raising(no_reraise: None) -> None:
    @guarded("test-guarded", default="fallback")
    def broken() -> str:
        raise RuntimeError("instrumentation bug")

    assert broken() == "fallback"


class QuotaExceeded(Exception):
    pass


def test_error_type_is_the_qualified_class_name() -> None:
    assert error_type(ValueError()) == "ValueError"
    assert error_type(QuotaExceeded()) == f"{__name__}.QuotaExceeded"
