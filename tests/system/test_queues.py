"""Queue behaviour with real worker processes: a job without cron runs its queued runs at once
(up to the worker's capacity); `jobs list` shows each job's effective overlap."""

from __future__ import annotations

import json
import signal
from datetime import datetime
from pathlib import Path

import pytest

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
        assert most_at_once(spans) == 8  # bounded by [worker] concurrency, not one at a time
        listed = run_cli("jobs", "list", "-c", str(config), "--json")
        assert listed.returncode == 0, listed.stderr
        overlap = {j["name"]: j["overlap"] for j in json.loads(listed.stdout)}
        assert overlap == {"q": "allow", "tick": "forbid"}
    finally:
        store.close()
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0
