"""The worker's claim rule under load: a claim that overlaps outcome writes leaves out jobs of
limited concurrency whose outcome is still unwritten (their lease is held until then)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobrunner.config import load_config
from jobrunner.records import Slot
from jobrunner.worker.claimer import CLAIM_AHEAD
from jobrunner.worker.supervisor import Worker
from tests.support import AllPorts, write_config


def new_worker(
    tmp_path: Path, jobs: list[dict[str, Any]], url: str | None = None
) -> tuple[AllPorts, Worker]:
    """A worker and its store on `url` (default: a new SQLite file)."""
    url = url or f"sqlite:///{tmp_path / 'jr.db'}"
    cfg = load_config(write_config(tmp_path / "jr.toml", url, jobs))
    store = AllPorts.from_url(url)
    return store, Worker(cfg, store)


def run_with(store: AllPorts, worker: Worker, body: Callable[[], Awaitable[None]]) -> None:
    """Start the worker, run `body`, then let its runs end and write their outcomes."""

    async def scenario() -> None:
        await worker.start()
        try:
            await body()
        finally:
            for a in list(worker.runs.active.values()):
                if a.task is not None:
                    await asyncio.wait([a.task], timeout=5)
            await worker.recorder.run_once()
            worker.executor.shutdown()
            if worker._listener is not None:
                worker._listener.stop()

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_a_claim_leaves_out_limited_jobs_with_unwritten_outcomes(tmp_path: Path) -> None:
    jobs = [
        {"name": "exclusive", "func": "sysjobs:noop_async", "overlap": "forbid"},  # one at a time
        {"name": "queue", "func": "sysjobs:noop_async", "overlap": "allow"},
    ]
    store, worker = new_worker(tmp_path, jobs)

    async def body() -> None:
        assert set(worker.claimer.claimable()) == {"exclusive", "queue"}
        run = store.enqueue("exclusive")
        assert await worker.claimer.run_once() >= 0
        (active,) = worker.runs.active.values()
        assert active.claimed.run.id == run.id
        await asyncio.wait_for(active.task, 10)  # type: ignore[arg-type]
        # finished, outcome not yet written: its lease is still held
        assert worker.runs.pending and set(worker.claimer.claimable()) == {"queue"}
        now = store.now()
        store.insert_slots([Slot(job_name="exclusive", scheduled_for=now, run_at=now)])
        store.enqueue("queue")
        await worker.claimer.run_once()
        started = [a.claimed.run.job_name for a in worker.runs.active.values()]
        # the finished run and the queue run: the exclusive slot waits, it is not skipped
        # as an overlap, and it is not started either while the lease is held
        assert sorted(started) == ["exclusive", "queue"]
        await worker.recorder.run_once()
        assert set(worker.claimer.claimable()) == {"exclusive", "queue"}
        await worker.claimer.run_once()
        runs = store.list_runs(job="exclusive")
        assert [r.status for r in runs if r.trigger == "schedule"] in (
            ["running"],
            ["succeeded"],
        )

    run_with(store, worker, body)


def test_runs_of_one_claim_all_begin_before_any_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim's runs begin first, their outcomes, lines and metrics come after: with 2,500
    runs in a claim, recording each before the next began made the last begin 35% later."""
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("JR_STARTS", str(events))  # sysjobs.noop_async appends its start
    jobs = [{"name": "queue", "func": "sysjobs:noop_async", "overlap": "allow"}]
    store, worker = new_worker(tmp_path, jobs)
    record = worker.runner._record

    def spy(active: Any, *args: Any) -> None:  # the real method, noted in the same file
        with open(events, "a") as f:
            f.write(json.dumps({"event": "recorded", "run_id": active.claimed.run.id}) + "\n")
        record(active, *args)

    worker.runner._record = spy  # type: ignore[method-assign]

    async def body() -> None:
        ids = {store.enqueue("queue").id for _ in range(5)}
        await worker.claimer.run_once()
        await asyncio.wait([a.task for a in worker.runs.active.values() if a.task], timeout=10)
        seen = [json.loads(line) for line in events.read_text().splitlines()]
        order = [e["event"] for e in seen if e["event"] in ("start", "recorded")]
        assert order == ["start"] * 5 + ["recorded"] * 5
        assert {e["run_id"] for e in seen} == ids
        await worker.recorder.run_once()
        assert {r.status for r in store.list_runs(job="queue")} == {"succeeded"}

    run_with(store, worker, body)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_run_claimed_ahead_begins_at_its_time_not_at_the_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, backend: str
) -> None:
    """The claimer takes a slot due within `CLAIM_AHEAD` at once (so its claim is done when
    it is due), records it running from its `run_at`, and the job begins then, not before
    (by the database's clock, which is this host's here)."""
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("JR_STARTS", str(events))
    url = None if backend == "sqlite" else request.getfixturevalue("pg_url")
    jobs = [{"name": "tick", "func": "sysjobs:noop_async"}]
    store, worker = new_worker(tmp_path, jobs, url)

    async def body() -> None:
        due = store.now() + timedelta(seconds=CLAIM_AHEAD * 0.8)
        store.insert_slots([Slot(job_name="tick", scheduled_for=due, run_at=due)])
        await worker.claimer.run_once()
        (active,) = worker.runs.active.values()
        assert active.claimed.run.run_at == due
        assert store.get_run(active.claimed.run.id).started_at == due
        await asyncio.wait_for(active.task, 10)  # type: ignore[arg-type]
        (start,) = [json.loads(line) for line in events.read_text().splitlines()[:1]]
        assert start["t"] >= due.timestamp() - 0.001
        await worker.recorder.run_once()
        assert store.get_run(active.claimed.run.id).status == "succeeded"

    run_with(store, worker, body)
