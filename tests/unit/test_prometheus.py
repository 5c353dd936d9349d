"""The prefork /metrics endpoint: merge rules, and an owner that sums its members over real sockets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from otel_crm._internal import prometheus
from otel_crm._internal.prometheus import Endpoint, Merger, rendezvous_dir, snapshot
from tests.e2e.stack import metric_sum, parse_prometheus
from tests.support.processes import free_port, wait_until
from tests.unit.test_exporters import fork_only, in_child


def family(name: str, kind: str, *samples: tuple[str, dict[str, str], float]) -> prometheus.Family:
    return {"name": name, "type": kind, "doc": "d", "samples": [list(s) for s in samples]}


def values(merger: Merger) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample, tuple(sorted(labels.items()))): value
            for fam in merger.families() for sample, labels, value in fam["samples"]}


def test_counters_and_histogram_buckets_are_summed_gauges_kept_per_worker_info_once() -> None:
    merger = Merger()
    for worker, (count, le1, total) in {"11": (3, 1, 2), "12": (4, 2, 3)}.items():
        merger.add([
            family("jobs", "counter", ("jobs_total", {"q": "a"}, count)),
            family("dur", "histogram", ("dur_bucket", {"le": "1.0"}, le1), ("dur_bucket", {"le": "+Inf"}, total),
                   ("dur_count", {}, total), ("dur_sum", {}, 0.5 * total)),
            family("inflight", "gauge", ("inflight", {}, count)),
            family("target", "info", ("target_info", {"pid": worker}, 1)),
        ], worker=worker)
    got = values(merger)
    assert got[("jobs_total", (("q", "a"),))] == 7
    assert got[("dur_bucket", (("le", "1.0"),))] == 3 and got[("dur_bucket", (("le", "+Inf"),))] == 5
    assert got[("dur_count", ())] == 5 and got[("dur_sum", ())] == 2.5
    assert got[("inflight", (("worker", "11"),))] == 3 and got[("inflight", (("worker", "12"),))] == 4
    assert [k for k in got if k[0] == "target_info"] == [("target_info", (("pid", "11"),))]


def test_a_retired_process_keeps_its_sums_not_its_gauges() -> None:
    merger = Merger()
    merger.add([family("jobs", "counter", ("jobs_total", {}, 5)), family("inflight", "gauge", ("inflight", {}, 2))],
               worker=None)
    assert values(merger) == {("jobs_total", ()): 5}


def test_a_taken_worker_label_is_not_overwritten_and_types_never_mix() -> None:
    merger = Merger()
    merger.add([family("pool", "gauge", ("pool", {"worker": "celery-1"}, 1))], worker="7")
    merger.add([family("pool", "counter", ("pool_total", {}, 1))], worker="8")
    assert values(merger) == {("pool", (("crm_worker", "7"), ("worker", "celery-1"))): 1}


def test_snapshot_leaves_out_created_timestamps() -> None:
    registry = CollectorRegistry()
    Counter("jobs", "d", registry=registry).inc(2)
    Histogram("dur", "d", registry=registry, buckets=[1]).observe(0.5)
    names = {s[0] for fam in snapshot(registry) for s in fam["samples"]}
    assert names == {"jobs_total", "dur_bucket", "dur_count", "dur_sum"}


def test_the_rendezvous_directory_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    path = rendezvous_dir("127.0.0.1", 9464)
    path.mkdir(mode=0o777)
    path.chmod(0o777)
    with pytest.raises(PermissionError):
        Endpoint("127.0.0.1", 9464)
    path.chmod(0o700)
    assert Endpoint("127.0.0.1", 9464).dir == path


def test_a_port_held_by_another_program_is_an_error_not_a_membership() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            Endpoint("127.0.0.1", busy.getsockname()[1], CollectorRegistry()).start()
        assert not rendezvous_dir("127.0.0.1", busy.getsockname()[1]).exists(), "nothing left behind"


@pytest.fixture
def owner() -> Iterator[tuple[Endpoint, CollectorRegistry]]:
    registry = CollectorRegistry()
    endpoint = Endpoint("127.0.0.1", free_port(), registry).start()
    yield endpoint, registry
    endpoint.close()


def fetch(endpoint: Endpoint) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def scrape(endpoint: Endpoint, name: str) -> float:
    return metric_sum(parse_prometheus(fetch(endpoint)), name)


def test_a_process_that_finds_its_port_owned_joins_and_its_final_counts_stay(
        owner: tuple[Endpoint, CollectorRegistry]) -> None:
    endpoint, registry = owner
    Counter("jobs", "d", registry=registry).inc(1)
    theirs = CollectorRegistry()
    jobs = Counter("jobs", "d", registry=theirs)
    jobs.inc(10)
    member = Endpoint("127.0.0.1", endpoint.port, theirs).start()
    assert member.role == "member" and endpoint.role == "owner"
    assert scrape(endpoint, "jobs_total") == 11
    jobs.inc(5)  # after the last scrape: only its final push tells the owner
    member.leave()
    assert not (endpoint.dir / f"{os.getpid()}.sock").exists()
    assert scrape(endpoint, "jobs_total") == 16
    member.close()


def test_a_member_that_does_not_answer_counts_as_its_last_snapshot_then_retires_when_dead(
        owner: tuple[Endpoint, CollectorRegistry]) -> None:
    endpoint, _ = owner
    fake = endpoint.dir / "4000001.sock"
    listener = prometheus._listen(fake)
    answer = threading.Event()

    def serve_once(payload: bytes) -> None:
        conn, _ = listener.accept()
        with conn:
            if answer.is_set():
                conn.sendall(payload)
            else:
                conn.recv(1)  # hold the connection: a busy worker

    def message(token: str, n: float) -> bytes:
        return prometheus.json.dumps({"token": token, "pid": 4000001, "families": [
            family("jobs", "counter", ("jobs_total", {}, n))]}).encode()

    monkey_timeout = prometheus.TIMEOUT
    prometheus.TIMEOUT = 0.3
    try:
        answer.set()
        threading.Thread(target=serve_once, args=(message("a", 7),), daemon=True).start()
        assert scrape(endpoint, "jobs_total") == 7
        answer.clear()
        threading.Thread(target=serve_once, args=(b"",), daemon=True).start()
        assert scrape(endpoint, "jobs_total") == 7, "busy: its last snapshot"
        answer.set()  # the pid now belongs to a new process (new token): the old one's 7 stay
        threading.Thread(target=serve_once, args=(message("b", 2),), daemon=True).start()
        assert scrape(endpoint, "jobs_total") == 9
        listener.close()  # dead without a word: refused, socket removed, counts kept
        assert scrape(endpoint, "jobs_total") == 9
        assert not fake.exists()
        assert scrape(endpoint, "jobs_total") == 9
    finally:
        prometheus.TIMEOUT = monkey_timeout


@fork_only
def test_forked_children_are_summed_and_their_gauges_labelled(owner: tuple[Endpoint, CollectorRegistry]) -> None:
    endpoint, registry = owner
    jobs = Counter("jobs", "d", registry=registry)
    busy = Gauge("busy", "d", registry=registry)
    Info("build", "d", registry=registry).info({"version": "1"})
    children: list[tuple[int, int]] = []
    try:
        for i in range(3):
            ready, stop = os.pipe(), os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                try:
                    jobs.inc(10 * (i + 1))
                    busy.set(i)
                    os.write(ready[1], b"x")
                    os.read(stop[0], 1)
                    if i == 0:
                        jobs.inc(100)  # never scraped: the final push carries it
                        endpoint.leave()
                finally:
                    os._exit(0)
            os.read(ready[0], 1)
            children.append((pid, stop[1]))
        jobs.inc(1)  # the owner's own (after the forks: a child's registry is a copy of the parent's)
        wait_until(lambda: len(list(endpoint.dir.glob("[0-9]*.sock"))) == 3, 10, "3 members")
        assert scrape(endpoint, "jobs_total") == 61
        samples = parse_prometheus(fetch(endpoint))
        assert {s.labels["worker"] for s in samples if s.name == "busy"} == {
            str(os.getpid()), *(str(pid) for pid, _ in children)}
        assert sum(1 for s in samples if s.name == "build_info") == 1
        for pid, stop in children[:2]:  # one leaves cleanly, one dies without a word
            os.write(stop, b"x")
            os.waitpid(pid, 0)
        assert scrape(endpoint, "jobs_total") == 161
        os.kill(children[2][0], signal.SIGKILL)
        os.waitpid(children[2][0], 0)
        assert scrape(endpoint, "jobs_total") == 161
        samples = parse_prometheus(fetch(endpoint))
        assert {s.labels["worker"] for s in samples if s.name == "busy"} == {str(os.getpid())}
        assert list(endpoint.dir.glob("[0-9]*.sock")) == []
    finally:
        for pid, _ in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


@fork_only
def test_a_forked_member_starts_answering_only_after_later_fork_hooks_ran(
        owner: tuple[Endpoint, CollectorRegistry], monkeypatch: pytest.MonkeyPatch) -> None:
    """config's after-fork hook (registered after the endpoint, as configure() does) renews the
    metric locks; a scrape served before it could block forever on a lock held at fork."""
    order: list[str] = []
    serve = prometheus._serve

    def recording_serve(sock: socket.socket, handle: object, name: str) -> None:
        order.append(name)
        serve(sock, handle, name)

    monkeypatch.setattr(prometheus, "_serve", recording_serve)
    os.register_at_fork(after_in_child=lambda: order.append("renew metric locks"))
    assert in_child(lambda: ",".join(order)) == "renew metric locks,otel_crm-prometheus-member"
    assert in_child(lambda: ",".join(order)) == "renew metric locks,otel_crm-prometheus-member", "every fork"
