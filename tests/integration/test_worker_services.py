"""Each service of the worker alone: one `run_once` pass with an injected clock, on a real
SQLite store, with only the run table (and what the service is handed) around it."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from jobrunner import __version__
from jobrunner.config import Config, HistoryConfig, load_config
from jobrunner.context import JobContext
from jobrunner.records import Outcome, Policy, Slot, WorkerInfo, catalog_entries
from jobrunner.worker.catalog import Catalog
from jobrunner.worker.claimer import Claimer
from jobrunner.worker.executor import Executor
from jobrunner.worker.heartbeat import Heartbeat
from jobrunner.worker.metrics import Metrics
from jobrunner.worker.pruner import Pruner
from jobrunner.worker.recorder import Recorder
from jobrunner.worker.runner import Runner
from jobrunner.worker.runs import Active, RunTable
from jobrunner.worker.scheduler import Scheduler
from jobrunner.worker.supervisor import policies
from jobrunner.worker.watchdog import Watchdog
from tests.support import AllPorts, write_config

WORKER = "test-worker"
JOBS = [
    {"name": "tick", "func": "sysjobs:noop_async", "cron": "* * * * * */10"},
    {"name": "queue", "func": "sysjobs:noop_async", "overlap": "allow"},
    {"name": "exclusive", "func": "sysjobs:noop_async", "overlap": "forbid"},  # limited
    {"name": "sleepy", "func": "sysjobs:sleep_async", "overlap": "allow"},
    {"name": "retried", "func": "sysjobs:sleep_async", "overlap": "allow", "retries": 1},
]


@dataclass
class Parts:
    """What the services are handed: a config, a store, the run table, metrics."""

    config: Config
    store: AllPorts
    runs: RunTable
    metrics: Metrics
    executor: Executor

    def runner(self, monotonic: Any = time.monotonic, renew_deadline: float = math.inf) -> Runner:
        jobs = {j.name: j for j in self.config.jobs}
        return Runner(
            jobs,
            self.runs,
            self.executor,
            self.metrics,
            worker_id=WORKER,
            renew_deadline=renew_deadline,
            monotonic=monotonic,
        )

    def claimer(
        self,
        *,
        lease_ttl: float = 30.0,
        monotonic: Any = time.monotonic,
        renew_deadline: float = math.inf,
    ) -> Claimer:
        return Claimer(
            policies(self.config),
            self.store,
            self.runs,
            self.runner(monotonic, renew_deadline),
            self.metrics,
            worker_id=WORKER,
            lease_ttl=lease_ttl,
            poll_interval=1.0,
            monotonic=monotonic,
        )

    def catalog(self) -> Catalog:
        return Catalog(self.config.jobs, self.store, worker_id=WORKER, lease_ttl=30.0)


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Parts]:
    monkeypatch.delenv("JR_STARTS", raising=False)
    url = "sqlite:///" + str(tmp_path / "x.db")
    config = load_config(write_config(tmp_path / "jr.toml", url, JOBS))
    store = AllPorts.from_url(url)
    store.prepare_schema()
    store.publish_catalog(catalog_entries(config.jobs), WORKER)  # enqueues need the catalog
    limited = [n for n, p in policies(config).items() if p.capacity is not None]
    runs = RunTable(4, limited=limited)
    executor = Executor(2)
    yield Parts(config, store, runs, Metrics(WORKER, __version__, "hash"), executor)
    executor.shutdown()
    store.close()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_scheduler_records_due_slots_and_sleeps_until_the_next(parts: Parts) -> None:
    now = [at("2030-01-01 00:00:09")]
    scheduler = Scheduler(
        parts.config.jobs,
        parts.store,
        parts.runs,
        parts.catalog(),
        parts.metrics,
        clock=lambda: now[0],
        monotonic=lambda: 100.0,  # a pass takes no time: the look-ahead becomes its least
    )

    async def scenario() -> list[float]:
        await scheduler.load()
        first = await scheduler.run_once()  # horizon 00:00:11 (the first look-ahead is 2s)
        assert parts.runs.wake_claimer.is_set()
        now[0] = at("2030-01-01 00:00:19.5")
        second = await scheduler.run_once()  # horizon 00:00:20 (look-ahead 0.5s)
        return [first, second]

    delays = asyncio.run(scenario())
    # next slot 00:00:20, recorded 0.5s ahead: from 00:00:09 that is 10.5s; then 00:00:30
    assert delays == [10.5, 10.0]
    runs = sorted(parts.store.list_runs(job="tick"), key=lambda r: r.id)
    assert [(r.scheduled_for, r.run_at, r.status) for r in runs] == [
        (at("2030-01-01 00:00:10"), at("2030-01-01 00:00:10"), "queued"),
        (at("2030-01-01 00:00:20"), at("2030-01-01 00:00:20"), "queued"),
    ]


def test_the_claimer_claims_a_queued_run_and_starts_it(parts: Parts) -> None:
    run = parts.store.enqueue("queue")
    claimer = parts.claimer(monotonic=lambda: 50.0)
    runs = parts.runs

    async def scenario() -> None:
        delay = await claimer.run_once()
        assert 0 < delay <= claimer.poll()
        (active,) = runs.active.values()
        assert active.claimed.run.id == run.id and active.job.name == "queue"
        assert (runs.executing, runs.unstarted, runs.capacity) == (1, 1, 3)
        assert active.task is not None and active.begin_at == 0.0  # due: not claimed ahead
        assert parts.store.get_run(run.id).status == "running"
        await asyncio.wait_for(active.task, 10)
        assert (runs.executing, runs.unstarted) == (0, 0)
        (outcome,) = runs.pending
        assert (outcome.lease.run_id, outcome.status) == (run.id, "succeeded")

    asyncio.run(scenario())
    assert parts.store.get_run(run.id).worker_id == WORKER


def test_the_heartbeat_renews_held_leases_and_stops_a_run_whose_lease_is_gone(
    parts: Parts,
) -> None:
    store, runs = parts.store, parts.runs
    short = parts.claimer(lease_ttl=0.2)
    info = WorkerInfo(
        worker_id=WORKER, hostname="here", pid=os.getpid(), version=__version__,
        config_hash="hash", jobs={},
    )  # fmt: skip
    heartbeat = Heartbeat(
        store,
        runs,
        parts.catalog(),
        parts.metrics,
        info=info,
        lease_ttl=30.0,
        interval=10.0,
        monotonic=lambda: 7.0,
    )

    async def scenario() -> None:
        gone = store.enqueue("sleepy", {"seconds": 30})
        await short.run_once()
        await asyncio.sleep(0.4)  # its 0.2s lease expires by the database's clock ...
        (lost,) = store.reap(lease_ttl=0.2)  # ... and a peer takes it over
        assert lost.id == gone.id
        held = store.enqueue("sleepy", {"seconds": 30})
        short.lease_ttl = 2.0  # long enough for this test, far from the heartbeat's 30s
        await short.run_once()
        lost_run, held_run = runs.active[gone.id], runs.active[held.id]

        assert await heartbeat.run_once() <= 10.0
        assert heartbeat.last_beat == 7.0
        assert lost_run.stop_reason == "lost" and lost_run.ctx.cancelled.is_set()
        assert held_run.stop_reason is None
        await asyncio.wait([lost_run.task], timeout=5)  # type: ignore[list-item]
        assert gone.id not in runs.active and not runs.pending  # abandoned: nothing to write
        assert held_run.task is not None and not held_run.task.done()
        (lock,) = [lk for lk in store.list_locks() if lk.run_id == held.id]
        assert lock.expires_at > store.now() + timedelta(seconds=20)  # renewed for 30s
        held_run.stop("shutdown")
        await asyncio.wait([held_run.task], timeout=5)

    asyncio.run(scenario())


def test_the_watchdog_stops_a_run_whose_lease_was_not_renewed_in_time(parts: Parts) -> None:
    """Guarantee 10 on one worker's clock: a claim sent at 100 gives its run until 103.5
    (lease_ttl 4s less its 0.5s margin); a renewal sent at 102 moves that to 105.5; the
    watchdog stops it past then, and the recorder writes it `lost` with its retry."""
    store, runs = parts.store, parts.runs
    clock = [100.0]
    claimer = parts.claimer(lease_ttl=4.0, monotonic=lambda: clock[0], renew_deadline=3.5)
    info = WorkerInfo(
        worker_id=WORKER, hostname="here", pid=os.getpid(), version=__version__,
        config_hash="hash", jobs={},
    )  # fmt: skip
    heartbeat = Heartbeat(
        store, runs, parts.catalog(), parts.metrics, info=info, lease_ttl=4.0, interval=1.0,
        renew_deadline=3.5, monotonic=lambda: clock[0],
    )  # fmt: skip
    watchdog = Watchdog(runs, parts.metrics, renew_deadline=3.5, monotonic=lambda: clock[0])
    recorder = Recorder(store, runs, parts.metrics, worker_id=WORKER, monotonic=lambda: 1.0)
    run = store.enqueue("retried", {"seconds": 30})

    async def scenario() -> None:
        await claimer.run_once()
        active = runs.active[run.id]
        assert active.deadline == 103.5
        clock[0] = 103.0
        assert watchdog.run_once() == pytest.approx(0.5)  # until that deadline
        clock[0] = 102.0
        await heartbeat.run_once()
        assert active.deadline == 105.5 and active.stop_reason is None
        clock[0] = 105.4
        assert watchdog.run_once() == pytest.approx(0.1)
        assert active.stop_reason is None
        clock[0] = 105.5
        watchdog.run_once()
        assert active.stop_reason == "deadline" and active.ctx.cancelled.is_set()
        await asyncio.wait([active.task], timeout=5)  # type: ignore[list-item]
        (outcome,) = runs.pending
        assert (outcome.status, outcome.reason, outcome.retry_in) == (
            "lost", "renew deadline passed", 0.0,
        )  # fmt: skip
        await recorder.run_once()

    asyncio.run(scenario())
    first, second = store.run_attempts(run.id)
    assert (first.status, first.reason) == ("lost", "renew deadline passed")
    assert (second.attempt, second.status) == (2, "queued")
    assert [lk for lk in store.list_locks() if lk.worker_id == WORKER] == []  # released


def test_the_recorder_writes_a_pending_outcome_and_frees_its_place(parts: Parts) -> None:
    store, runs = parts.store, parts.runs
    run = store.enqueue("exclusive")
    claim = store.claim(worker_id=WORKER, limit=1, policies={"exclusive": Policy()}, lease_ttl=30.0)
    (claimed,) = claim.started
    job = next(j for j in parts.config.jobs if j.name == "exclusive")
    ctx = JobContext(
        run_id=run.id,
        job_name=job.name,
        scheduled_for=None,
        attempt=1,
        worker_id=WORKER,
        fence=claimed.lease.fence,
        correlation_id=None,
        log=structlog.get_logger(),
    )
    runs.active[run.id] = Active(claimed=claimed, job=job, ctx=ctx)
    runs.unwritten["exclusive"] += 1  # as the runner counts a limited job's outcome
    runs.pending.append(Outcome(lease=claimed.lease, status="succeeded"))
    recorder = Recorder(store, runs, parts.metrics, worker_id=WORKER, monotonic=lambda: 1.0)

    assert asyncio.run(recorder.run_once()) == 0.0
    assert store.get_run(run.id).status == "succeeded"
    assert not runs.pending and not runs.active
    assert not runs.unwritten and runs.wake_claimer.is_set()  # the job may be claimed again
    assert [lk for lk in store.list_locks() if lk.worker_id == WORKER] == []


def test_the_pruner_deletes_old_finished_runs(parts: Parts) -> None:
    store = parts.store

    def slot(second: int, status: str) -> Slot:
        t = at(f"2030-01-01 00:00:{second:02}")
        return Slot(job_name="tick", scheduled_for=t, run_at=t, status=status)  # type: ignore[arg-type]

    store.insert_slots([slot(1, "skipped"), slot(2, "queued")])  # skipped: finished now
    time.sleep(0.3)
    store.insert_slots([slot(3, "skipped")])
    history = HistoryConfig(
        retention=timedelta(milliseconds=200), keep_last=0, prune_interval=timedelta(minutes=5)
    )
    pruner = Pruner(history, store, parts.metrics, monotonic=lambda: 1.0)

    assert asyncio.run(pruner.run_once()) == 300.0
    left = {r.scheduled_for.second: r.status for r in store.list_runs(job="tick")}  # type: ignore[union-attr]
    assert left == {2: "queued", 3: "skipped"}  # the old finished one is gone
