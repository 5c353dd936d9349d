"""`/metrics` for a prefork server: the process that owns the port serves the sum of every process.

Under gunicorn the master binds the port while forked workers do the work. At scrape time the
*owner* asks every *member* for a snapshot over its Unix socket in a private rendezvous directory
and merges: counters, histograms (bucket by bucket) and summaries summed; gauges per process under
a `worker` label; info metrics once. An exiting member pushes its final counts to the owner first
(kept in a retired sum: totals never go down). Nothing is written per measurement. docs/metrics.md.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from otel_crm._internal import forks
from otel_crm._internal.prometheus_dir import private_dir, rendezvous_dir
from otel_crm._internal.safety import report_internal_error

__all__ = ["Endpoint", "Merger", "rendezvous_dir", "snapshot", "start_endpoint"]

_log = logging.getLogger("otel_crm")
SUMMED = frozenset({"counter", "histogram", "summary"})
OWNER_SOCKET = "owner.sock"
TIMEOUT = 2.0  # per member and per retire push; Prometheus' scrape timeout is 10 s by default
_MAX_MESSAGE = 64 * 1024 * 1024

Family = dict[str, Any]  # {"name", "type", "doc", "samples": [[name, {labels}, value], ...]}


def snapshot(registry: Any = None) -> list[Family]:
    """This process's metrics, as plain data (JSON-able)."""
    if registry is None:
        from prometheus_client import REGISTRY as registry
    families = []
    for metric in registry.collect():
        samples = [[s.name, dict(s.labels), s.value] for s in metric.samples
                   if not (metric.type in SUMMED and s.name.endswith("_created"))]
        families.append({"name": metric.name, "type": metric.type, "doc": metric.documentation,
                         "samples": samples})
    return families


class Merger:
    """Sums of counters/histograms/summaries; per-process gauges under `worker`; info once."""

    def __init__(self) -> None:
        self._meta: dict[str, tuple[str, str]] = {}
        self._values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}

    def add(self, families: list[Family], worker: str | None) -> None:
        """`worker` None: a retired process, whose sums are kept and whose gauges are not. Info
        metrics (target_info: one per process, each with its own instance id) come from the first
        process added, the owner."""
        for family in families:
            name, kind = family["name"], family["type"]
            if (worker is None and kind not in SUMMED) or (kind == "info" and name in self._meta):
                continue
            meta = self._meta.setdefault(name, (kind, family.get("doc", "")))
            if meta[0] != kind:  # the same name with another type: keep the first, never mix
                continue
            values = self._values.setdefault(name, {})
            for sample_name, labels, value in family["samples"]:
                if kind in SUMMED:
                    key = (sample_name, tuple(sorted(labels.items())))
                    values[key] = values.get(key, 0.0) + float(value)
                elif kind == "info":
                    values[(sample_name, tuple(sorted(labels.items())))] = float(value)
                elif worker is not None:
                    label = "worker" if "worker" not in labels else "crm_worker"
                    key = (sample_name, tuple(sorted({**labels, label: worker}.items())))
                    values[key] = float(value)

    def families(self) -> list[Family]:
        return [{"name": name, "type": self._meta[name][0], "doc": self._meta[name][1],
                 "samples": [[sample, dict(labels), value] for (sample, labels), value in values.items()]}
                for name, values in self._values.items()]

    def metrics(self) -> list[Any]:
        from prometheus_client.metrics_core import Metric

        out = []
        for family in self.families():
            metric = Metric(family["name"], family["doc"], family["type"])
            for sample, labels, value in family["samples"]:
                metric.add_sample(sample, labels, value)
            out.append(metric)
        return out


def _listen(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)
    return sock


def _read_all(conn: socket.socket) -> bytes:
    chunks, size = [], 0
    while chunk := conn.recv(1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if size > _MAX_MESSAGE:
            raise ValueError("message too large")
    return b"".join(chunks)


def _serve(sock: socket.socket, handle: Any, name: str) -> None:
    def loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:  # closed: this process stopped serving
                return
            with conn:
                try:
                    conn.settimeout(TIMEOUT)
                    handle(conn)
                except Exception as exc:  # a slow or broken peer must not stop the loop
                    report_internal_error("prometheus_endpoint", exc, raise_in_tests=False)

    threading.Thread(target=loop, name=name, daemon=True).start()


class Endpoint:
    """This process's part: owner (serves HTTP, merges) or member (serves its snapshot)."""

    def __init__(self, host: str, port: int, registry: Any = None) -> None:
        self.host, self.port, self.registry = host, port, registry
        self.dir = private_dir(rendezvous_dir(host, port))
        self.role = "none"
        self.token = uuid.uuid4().hex
        self._pid = os.getpid()
        self._http: Any = None
        self._owner_sock: socket.socket | None = None
        self._member_sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._last_seen: dict[str, tuple[int, list[Family]]] = {}
        self._retired = Merger()
        self._retired_tokens: collections.deque[str] = collections.deque(maxlen=4096)
        self._late_hook_registered = False

    # --- roles -------------------------------------------------------------------------------
    def start(self) -> Endpoint:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Aggregate(self))
        try:
            self._http, _ = start_http_server(port=self.port, addr=self.host, registry=registry)
        except OSError as exc:
            if not self._wait_for_owner():
                with contextlib.suppress(OSError):
                    self.dir.rmdir()
                raise  # the port is someone else's, not an otel_crm owner's: nothing to join
            _log.debug("otel_crm: port %s is served by another process of this app: joining it (%r)",
                       self.port, exc)
            self._become_member()
        else:
            self.role = "owner"
            self._owner_sock = _listen(self.dir / OWNER_SOCKET)
            _serve(self._owner_sock, self._on_retire, "otel_crm-prometheus-owner")
            self._sweep()
            atexit.register(self._owner_exit)
        forks.register("prometheus_endpoint", before=self._before_fork,
                       after_in_child=self._after_fork_in_child)
        return self

    def _wait_for_owner(self, timeout: float = 0.5) -> bool:
        """An owner that bound the port a moment ago may not have its socket yet."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.settimeout(TIMEOUT)
                    probe.connect(str(self.dir / OWNER_SOCKET))
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)

    def _become_member(self, start_thread: bool = True) -> None:
        self.role = "member"
        self._pid = os.getpid()
        self.token = uuid.uuid4().hex
        self._member_sock = _listen(self.dir / f"{self._pid}.sock")
        if start_thread:
            self._start_member_thread()
        atexit.register(self.leave)

    def _start_member_thread(self) -> None:
        try:
            if self.role == "member" and self._member_sock is not None and self._pid == os.getpid():
                _serve(self._member_sock, self._on_snapshot_request, "otel_crm-prometheus-member")
        except Exception as exc:  # runs in fork hooks: never in the host app's way
            report_internal_error("prometheus_endpoint", exc, raise_in_tests=False)

    def close(self) -> None:
        """Stop serving and remove this process's files (tests; an app's processes serve until exit)."""
        role, self.role = self.role, "closed"
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for sock in (self._owner_sock, self._member_sock):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
                sock.close()
        name = OWNER_SOCKET if role == "owner" else f"{self._pid}.sock"
        with contextlib.suppress(OSError):
            (self.dir / name).unlink()
        with contextlib.suppress(OSError):
            self.dir.rmdir()

    def _before_fork(self) -> None:
        if self.role == "closed":
            return
        # The child must not collect before config's own after-fork hook has given its metric
        # pipeline fresh locks (a lock a parent thread held at fork stays held in the child).
        # That hook was registered after ours; one registered now runs after it, in every child.
        if not self._late_hook_registered:
            self._late_hook_registered = True
            try:
                # One name per endpoint: a name is handed to the OS once, at its first registration.
                forks.register(f"prometheus_member_thread.{id(self)}",
                               after_in_child=self._start_member_thread)
            except Exception as exc:
                report_internal_error("prometheus_endpoint", exc, raise_in_tests=False)

    def _after_fork_in_child(self) -> None:
        if self.role == "closed":
            return
        try:
            # Copies of the parent's listening sockets: the child serves none of them.
            for sock in (getattr(self._http, "socket", None), self._owner_sock, self._member_sock):
                if sock is not None:
                    sock.close()
            self._http = self._owner_sock = self._member_sock = None
            self._lock = threading.Lock()
            self._last_seen.clear()
            self._retired = Merger()
            self._become_member(start_thread=False)  # the late hook starts it
        except Exception as exc:
            report_internal_error("prometheus_endpoint", exc, raise_in_tests=False)

    # --- member ------------------------------------------------------------------------------
    def _message(self) -> bytes:
        return json.dumps({"token": self.token, "pid": self._pid,
                           "families": snapshot(self.registry)}).encode()

    def _on_snapshot_request(self, conn: socket.socket) -> None:
        conn.sendall(self._message())

    def leave(self) -> None:
        """A member's exit (atexit): push the final counts to the owner, then remove the socket."""
        if self.role != "member" or os.getpid() != self._pid:
            return  # inherited by a child of this process: not its exit
        self.role = "left"
        try:  # first the final counts, then the socket: the owner never sees us gone uncounted
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(TIMEOUT)
                conn.connect(str(self.dir / OWNER_SOCKET))
                conn.sendall(self._message())
                conn.shutdown(socket.SHUT_WR)
                conn.recv(16)
        except OSError:
            pass  # no owner (it exited first): nobody to count for
        except Exception as exc:
            report_internal_error("prometheus_endpoint", exc, raise_in_tests=False)
        with contextlib.suppress(OSError):
            (self.dir / f"{self._pid}.sock").unlink()

    # --- owner -------------------------------------------------------------------------------
    def _on_retire(self, conn: socket.socket) -> None:
        message = json.loads(_read_all(conn))
        with self._lock:
            self._retire(message["token"], message["families"])
        conn.sendall(b"ok")

    def _retire(self, token: str, families: list[Family]) -> None:
        """Fold a process's last counts into the retired sums (caller holds the lock)."""
        if token in self._retired_tokens:
            return
        self._last_seen.pop(token, None)
        self._retired.add(families, worker=None)
        self._retired_tokens.append(token)

    def _fetch(self, path: Path) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(TIMEOUT)
            conn.connect(str(path))
            return dict(json.loads(_read_all(conn)))

    def _members(self) -> list[Path]:
        return [p for p in self.dir.glob("*.sock") if p.name != OWNER_SOCKET]

    def _sweep(self) -> None:
        """Remove the sockets of processes that died without a word (SIGKILL, os._exit)."""
        for path in self._members():
            try:
                self._fetch(path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    path.unlink()
            except Exception:  # noqa: S110 - alive but slow: not ours to remove
                pass

    def collect(self) -> list[Any]:
        own = snapshot(self.registry)
        fetched: dict[int, dict[str, Any]] = {}
        unreachable: set[int] = set()
        for path in self._members():
            try:
                pid = int(path.stem)
            except ValueError:
                continue
            try:
                fetched[pid] = self._fetch(path)
            except (ConnectionRefusedError, FileNotFoundError):  # dead: its socket is stale
                with contextlib.suppress(OSError):
                    path.unlink()
            except Exception:  # alive but did not answer in time: use its last snapshot
                unreachable.add(pid)
        with self._lock:
            for pid, message in fetched.items():
                token = message["token"]
                if token in self._retired_tokens:
                    continue
                for old, (old_pid, families) in list(self._last_seen.items()):
                    if old_pid == pid and old != token:  # the pid was reused by a new process
                        self._retire(old, families)
                self._last_seen[token] = (pid, message["families"])
            alive = set(fetched) | unreachable
            for token, (pid, families) in list(self._last_seen.items()):
                if pid not in alive:
                    self._retire(token, families)
            merged = Merger()
            merged.add(own, worker=str(os.getpid()))
            for pid, families in self._last_seen.values():
                merged.add(families, worker=str(pid))
            merged.add(self._retired.families(), worker=None)
        return merged.metrics()

    def _owner_exit(self) -> None:
        if self.role != "owner" or os.getpid() != self._pid:
            return
        with contextlib.suppress(OSError):
            (self.dir / OWNER_SOCKET).unlink()
        with contextlib.suppress(OSError):
            self.dir.rmdir()  # only when no member is left


class _Aggregate:
    """The owner's HTTP registry holds only this: every process's metrics, merged."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def collect(self) -> list[Any]:
        try:
            return self._endpoint.collect()
        except Exception as exc:
            report_internal_error("prometheus_endpoint", exc, raise_in_tests=False)
            return []


_started: list[Endpoint] = []  # fork hooks hold endpoints weakly (forks.py): keep them alive


def start_endpoint(host: str, port: int, registry: Any = None) -> Endpoint:
    _started.append(Endpoint(host, port, registry).start())
    return _started[-1]
