"""Exit without a collector: drop what is still queued at once, count it, say so in one line.

At exit the batch processors hand everything queued to the exporters; with nothing listening on
the endpoint the OTLP exporters retry with backoff until the shutdown deadline (3 s by default)
and log a warning per signal. Before the exit flush, `prepare()` probes each exporter's endpoint
with one TCP connect: refused (or unresolvable, or silent while no export ever succeeded) means
the flush cannot succeed, so those exporters drop instead of sending. Every dropped item is
counted in `crm.telemetry.dropped{crm.drop.reason="shutdown"}` and tallied for the one line
`summary()` returns. A collector that accepts connections gets the ordinary flush.
"""

from __future__ import annotations

import socket
import threading
import weakref
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit

from otel_crm._internal import accounting

__all__ = ["ExitDropping", "count", "endpoint_address", "prepare", "probe", "register", "reset", "set_counter",
           "summary"]

PROBE_TIMEOUT_SECONDS = 0.3


class ExitDropping(Protocol):
    """What `prepare()` needs of an exporter wrapper (exporters._ForkSafe*)."""

    endpoint: str
    succeeded: bool

    def drop_from_now(self) -> None: ...


_lock = threading.Lock()
_exporters: weakref.WeakSet[Any] = weakref.WeakSet()
_dropped: dict[str, int] = {}
_unreachable: list[str] = []


def register(exporter: ExitDropping) -> None:
    _exporters.add(exporter)


def set_counter(counter: Any) -> None:
    """The `crm.telemetry.dropped` counter drops are added to (set by the QueueGuards): the one
    of the ledger (`accounting`), which counts drops at exit and failed exports alike."""
    accounting.set_counter(counter)


def endpoint_address(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of an OTLP endpoint: `http://host:4317`, `host:4317`, `https://host/v1/traces`."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None:
        return None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def probe(endpoint: str, *, succeeded: bool, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """False when a flush to `endpoint` cannot succeed: the connection is refused or the name
    does not resolve; a connect that times out counts only if no export ever succeeded."""
    address = endpoint_address(endpoint)
    if address is None:
        return True  # not ours to judge: the exporter reports it
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except (ConnectionRefusedError, socket.gaierror):
        return False
    except OSError:  # timeout, unreachable network
        return succeeded


def prepare(exporters: Iterable[ExitDropping] | None = None) -> list[str]:
    """Probe each registered exporter's endpoint once; switch those that cannot reach theirs to
    dropping. Returns the unreachable endpoints."""
    verdicts: dict[str, bool] = {}
    for exporter in list(_exporters if exporters is None else exporters):
        endpoint = exporter.endpoint
        if endpoint not in verdicts:
            verdicts[endpoint] = probe(endpoint, succeeded=exporter.succeeded)
        if not verdicts[endpoint]:
            exporter.drop_from_now()
    down = [endpoint for endpoint, up in verdicts.items() if not up]
    with _lock:
        for endpoint in down:
            address = endpoint_address(endpoint)
            where = f"{address[0]}:{address[1]}" if address is not None else endpoint
            if where not in _unreachable:
                _unreachable.append(where)
    return down


def count(signal: str, items: int) -> None:
    if items <= 0:
        return
    with _lock:
        _dropped[signal] = _dropped.get(signal, 0) + items
    accounting.drop(signal, "shutdown", items)


def summary() -> str | None:
    """The one line for the exit, or None when nothing was dropped."""
    with _lock:
        if not _unreachable:
            return None
        dropped = dict(_dropped)
        where = ", ".join(_unreachable)
    counts = ", ".join(f"{dropped.get(signal, 0)} {signal}" for signal in ("traces", "logs", "metrics"))
    return (f"otel_crm: no collector at {where} at exit; dropped {counts} "
            f"(counted in crm.telemetry.dropped, reason shutdown)")


def reset() -> None:
    """Forget tallies (tests)."""
    with _lock:
        _dropped.clear()
        _unreachable.clear()
