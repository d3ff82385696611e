"""Queue behaviour with real worker processes: a job without cron runs its queued runs at once
(up to the worker's capacity); `jobs list` shows each job's effective overlap; a run of higher
priority overtakes a backlog."""

from __future__ import annotations

import json
import signal
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobrunner.config import load_config
from jobrunner.records import catalog_entries
from jobrunner.store.tables import job_runs
from tests.support import AllPorts, Workers, run_cli, wait_for, write_config

pytestmark = pytest.mark.system


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    """The largest number of the spans that overlap at one instant."""
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    running = best = 0
    for _, step in edges:  # at equal times a finish (-1) sorts before a start
        running += step
        best = max(best, running)
    return best


@pytest.mark.parametrize("db_url", ["postgresql", "sqlite"], indirect=True)
def test_a_job_without_cron_runs_its_queue_concurrently(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    jobs = [
        {"name": "q", "func": "sysjobs:sleep_async", "kwargs": {"seconds": 0.5}},
        {"name": "tick", "func": "sysjobs:noop_async", "cron": "0 0 1 1 *"},
    ]
    config = write_config(tmp_path / "jr.toml", db_url, jobs, worker={"concurrency": 8})
    proc = workers.start(config)
    store = AllPorts.from_url(db_url)
    try:
        ids = store.enqueue_many("q", [None] * 20)
        done = lambda: all(store.get_run(i).status == "succeeded" for i in ids)  # noqa: E731
        assert wait_for(done, 30)
        runs = [store.get_run(i) for i in ids]
        spans = [(r.started_at, r.finished_at) for r in runs if r.started_at and r.finished_at]
        assert len(spans) == 20
        # not one at a time (overlap "forbid" gives 1). Times are the database's: started_at
        # at the claim, finished_at when the outcome is written, so a span may outlast its run
        assert most_at_once(spans) >= 4, spans
        listed = run_cli("jobs", "list", "-c", str(config), "--json")
        assert listed.returncode == 0, listed.stderr
        overlap = {j["name"]: j["overlap"] for j in json.loads(listed.stdout)}
        assert overlap == {"q": "allow", "tick": "forbid"}
    finally:
        store.close()
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0


@pytest.mark.parametrize("db_url", ["postgresql", "sqlite"], indirect=True)
def test_a_high_priority_run_overtakes_a_backlog_of_10000(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    jobs = [{"name": "bulk", "func": "sysjobs:noop_async"}]
    config = write_config(tmp_path / "jr.toml", db_url, jobs, worker={"concurrency": 16})
    store = AllPorts.from_url(db_url)
    try:
        migrate_and_publish(store, config)
        backlog = store.enqueue_many("bulk", [None] * 10_000)
        urgent = store.enqueue("bulk", priority=10)
        proc = workers.start(config)
        assert wait_for(lambda: store.get_run(urgent.id).status == "succeeded", 30)
        began = store.get_run(urgent.id).started_at
        assert began is not None
        with store.engine.connect() as conn:
            ahead = conn.execute(
                sa.select(sa.func.count()).where(
                    job_runs.c.id != urgent.id, job_runs.c.started_at < began
                )
            ).scalar_one()
        # only runs of the claim before it (at most one batch of 16) may have begun earlier
        assert ahead < 16, ahead
        assert store.get_run(backlog[-1]).status in ("queued", "running", "succeeded")
    finally:
        store.close()
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0


def migrate_and_publish(store: AllPorts, config: Path) -> None:
    """The schema and the catalog, as a worker would write them at start."""
    store.prepare_schema()
    store.publish_catalog(catalog_entries(load_config(config).jobs), "setup")
