from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from otel_crm._internal.prometheus_dir import private_dir, rendezvous_dir


def test_one_directory_per_user_host_and_port() -> None:
    path = rendezvous_dir("127.0.0.1", 9464)
    assert path.parent == Path(tempfile.gettempdir())
    assert path.name == f"otel-crm-prometheus-{os.getuid()}-127.0.0.1-9464"
    assert rendezvous_dir("::1", 9464).name.endswith("-__1-9464")


def test_a_long_host_still_makes_a_valid_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by `make reliability`: a 300-character host gave `File name too long`."""
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    long_host = "a" * 250 + ".example"
    path = rendezvous_dir(long_host, 9464)
    assert len(path.name) < 100 and path != rendezvous_dir("b" * 250, 9464)
    assert private_dir(path).is_dir()


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shared"
    path.mkdir(mode=0o777)
    path.chmod(0o777)
    with pytest.raises(PermissionError):
        private_dir(path)
