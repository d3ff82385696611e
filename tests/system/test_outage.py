"""Guarantee 7: a PostgreSQL outage during a run. The worker does not exit, logs the outage
once per backoff step, reconnects and resumes scheduling. Its run outlasts the renew deadline
without the database, so it is stopped and retried (guarantee 10).

Stops the real local PostgreSQL cluster with pg_ctlcluster and always starts it again. Only
runs where that cluster is the test database (CI on this machine)."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.chaos import pg_cluster
from tests.support import AllPorts, Workers, wait_for, write_config

pytestmark = pytest.mark.system


def _pg(action: str) -> None:
    cluster = pg_cluster()
    assert cluster is not None
    args = [*cluster, action] + (["-m", "fast"] if action == "stop" else [])
    subprocess.run(args, check=True, capture_output=True, timeout=60)


def test_database_outage_does_not_stop_the_worker(
    tmp_path: Path, pg_url: str, workers: Workers
) -> None:
    if pg_cluster() is None or sa.make_url(pg_url).host not in ("127.0.0.1", "localhost"):
        pytest.skip("needs the local PostgreSQL cluster (pg_ctlcluster) as the test database")
    config = write_config(
        tmp_path / "jr.toml",
        pg_url,
        [
            {
                "name": "tick",
                "func": "sysjobs:noop_async",
                "cron": "* * * * * *",
                "catch_up": "all",
                "misfire_grace": "1m",
            },
            {
                "name": "long",
                "func": "sysjobs:sleep_async",
                "kwargs": {"seconds": 14},
                "retries": 1,
            },
        ],
    )
    proc = workers.start(config)
    store = AllPorts.from_url(pg_url)
    try:
        run = store.enqueue("long")
        assert wait_for(lambda: store.get_run(run.id).status == "running", 10)
        store.engine.dispose()
        _pg("stop")
        try:
            time.sleep(10)
            assert proc.proc.poll() is None, "the worker exited during the outage"
        finally:
            _pg("start")
        assert wait_for(lambda: bool(proc.find("database reachable again")), 30)
        warnings = proc.find("database unavailable")
        assert warnings, "the outage must be logged"
        per_service = {}
        for w in warnings:
            per_service.setdefault(w["service"], []).append(w["retry_in"])
        for delays in per_service.values():  # once per backoff step: growing delays
            assert delays == sorted(delays)
        # The outage (10s) outlasted the renew deadline (lease_ttl 4s less 0.5s): the run was
        # stopped, recorded lost once the database was back, and retried (guarantee 10)
        assert proc.find(
            "renew deadline passed: stopping run (its lease may expire before it is renewed)"
        )
        assert wait_for(lambda: len(store.run_attempts(run.id)) == 2, 30)
        first, second = store.run_attempts(run.id)
        assert first.status == "lost"
        assert first.reason in ("renew deadline passed", "lease expired")
        assert wait_for(lambda: store.get_run(second.id).status == "succeeded", 40)
        back = datetime.now(UTC)

        def tick_times() -> list[datetime]:
            ticks = [r for r in store.list_runs(job="tick", limit=1000) if r.attempt == 1]
            return sorted(r.scheduled_for for r in ticks if r.scheduled_for)

        assert wait_for(lambda: tick_times()[-1] > back + timedelta(seconds=2), 20)
        times = tick_times()
        gaps = {b - a for a, b in pairwise(times)}
        assert gaps == {timedelta(seconds=1)}, (times, proc.log_path.read_text()[-4000:])
        assert proc.proc.poll() is None
    finally:
        store.close()
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0
