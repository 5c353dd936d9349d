"""Where the processes of one prefork server meet: a private per-user directory of Unix sockets,
named after the endpoint's host and port (prometheus.py)."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["private_dir", "rendezvous_dir"]


def rendezvous_dir(host: str, port: int) -> Path:
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in host)
    if len(safe) > 64:  # a long host name must not exceed the file system's 255-byte name limit
        safe = hashlib.sha256(host.encode()).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / f"otel-crm-prometheus-{os.getuid()}-{safe}-{port}"


def private_dir(path: Path) -> Path:
    """Create the rendezvous directory, or accept an existing one only if it is ours and private:
    another user able to write there could feed numbers into our /metrics."""
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path} is not a private directory of this user")
    return path
