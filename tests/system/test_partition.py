"""Guarantee 10: a replica cut off from PostgreSQL stops its run before a peer's next attempt
can start, so the two attempts never run at once; a replica started before its database waits
for it (up to `[database] startup_timeout`).

Replica A reaches the database through a TCP proxy; B directly. A runs a long job, then the
proxy stops forwarding bytes (the sockets stay open: A's calls hang, nothing fails). B takes
the expired lease over and runs attempt 2. The job records a tick every 50 ms, so its own
timestamps show when each attempt ran."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bench.pgproxy import Proxies
from bench.scenarios.partition import KINDS, spans, through
from tests.support import ROOT, SYSJOBS_DIR, AllPorts, Workers, wait_for, write_config

pytestmark = pytest.mark.system


@pytest.fixture
def proxies(pg_url: str) -> Iterator[Proxies]:
    server = sa.make_url(pg_url)
    found = Proxies(server.host or "127.0.0.1", server.port or 5432)
    yield found
    found.close()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_partitioned_replica_stops_its_run_before_the_peer_retries(
    kind: str, tmp_path: Path, pg_url: str, proxies: Proxies, workers: Workers
) -> None:
    job: dict[str, Any] = {"name": "long", **KINDS[kind], "kwargs": {"seconds": 14}, "retries": 1}
    events = tmp_path / "events.jsonl"
    workers.env["BENCH_EVENTS"] = str(events)
    proxy = proxies.new()
    paths = {"import_paths": [str(SYSJOBS_DIR), str(ROOT)]}  # bench.jobs
    cut_off = write_config(tmp_path / "a.toml", through(proxy, pg_url), [job], worker=paths)
    direct = write_config(tmp_path / "b.toml", pg_url, [job], worker=paths)
    a = workers.start(cut_off)
    store = AllPorts.from_url(pg_url)
    try:
        first = store.enqueue("long")
        assert wait_for(lambda: store.get_run(first.id).status == "running", 15)
        b = workers.start(direct)
        time.sleep(1.5)  # a few heartbeats of A renew the lease
        proxy.freeze()
        frozen = time.time()
        try:
            retried = wait_for(lambda: len(store.run_attempts(first.id)) == 2, 20)
            assert retried, "the peer did not take the run over"
            second = store.run_attempts(first.id)[-1]
            assert wait_for(lambda: store.get_run(second.id).status == "succeeded", 30)
        finally:
            proxy.thaw()
        seen = spans(events)
        ended_1, began_2 = seen[1][1], seen[2][0]
        assert ended_1 < began_2, (
            f"attempt 1 ran until {ended_1 - frozen:.2f}s after the partition, attempt 2 "
            f"began at {began_2 - frozen:.2f}s"
        )
        # the stop came from A's own clock: 3.5s (lease_ttl 4s less the margin) or less
        # after A's last renewal, which came at most a heartbeat before the partition
        assert ended_1 - frozen < 3.6
        attempts = store.run_attempts(first.id)
        assert [(r.attempt, r.status) for r in attempts] == [(1, "lost"), (2, "succeeded")]
        assert attempts[1].worker_id != attempts[0].worker_id
        assert a.find(
            "renew deadline passed: stopping run (its lease may expire before it is renewed)"
        )
        thread_warning = a.find(
            "a sync job in a thread cannot be stopped: ctx.cancelled is set, but it runs on "
            "until it returns, beside a peer's next attempt (isolation = 'process' can be killed)"
        )
        assert bool(thread_warning) == (kind == "thread")
        # A comes back: it does not exit, heartbeats again, and its late outcome changed
        # nothing (fenced)
        thawed = store.now()
        assert wait_for(
            lambda: any(
                w.worker_id == attempts[0].worker_id and w.last_seen > thawed
                for w in store.list_workers()
            ),
            20,
        )
        assert a.proc.poll() is None
        assert [(r.attempt, r.status) for r in store.run_attempts(first.id)] == [
            (1, "lost"),
            (2, "succeeded"),
        ]
    finally:
        store.close()
    for proc in (a, b):
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


def test_a_replica_started_before_its_database_waits_for_it(
    tmp_path: Path, pg_url: str, proxies: Proxies, workers: Workers
) -> None:
    proxy = proxies.new()
    real = proxy.target
    proxy.target = ("127.0.0.1", closed_port())  # the database is not up yet
    jobs = [{"name": "q", "func": "sysjobs:noop_async"}]
    a = workers.start(write_config(tmp_path / "a.toml", through(proxy, pg_url), jobs), wait=False)
    assert wait_for(lambda: len(a.find("database unavailable")) >= 3, 20)
    proxy.target = real  # the database is up
    a.wait_started(30)
    waits = a.find("database unavailable")
    assert {w["service"] for w in waits} == {"startup"}
    delays = [w["retry_in"] for w in waits]
    assert delays == sorted(delays) and delays[0] < delays[-1]  # one line per backoff step
    assert all(w["error"] for w in waits)  # each says why
    assert a.find("database reachable again")
    store = AllPorts.from_url(pg_url)
    try:
        run = store.enqueue("q")
        assert wait_for(lambda: store.get_run(run.id).status == "succeeded", 15)
    finally:
        store.close()
    a.signal(signal.SIGTERM)
    assert a.wait(30) == 0


def test_a_replica_gives_up_after_startup_timeout_and_a_signal_stops_the_wait(
    tmp_path: Path, workers: Workers
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres"
    jobs = [{"name": "q", "func": "sysjobs:noop_async"}]
    config = write_config(tmp_path / "a.toml", url, jobs, database={"startup_timeout": "2s"})
    began = time.monotonic()
    gave_up = workers.start(config, wait=False)
    assert gave_up.wait(30) == 1
    assert time.monotonic() - began >= 2
    text = gave_up.log_path.read_text()
    assert "Connection refused" in text and "error: database" in text
    assert gave_up.find("database still unavailable at start: giving up")

    waiting = workers.start(write_config(tmp_path / "b.toml", url, jobs), wait=False)
    assert wait_for(lambda: bool(waiting.find("database unavailable")), 20)
    waiting.signal(signal.SIGTERM)
    assert waiting.wait(10) == 0
    assert waiting.find("signal received while waiting for the database: not started")
