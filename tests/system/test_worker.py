"""Real `jobrunner run` processes on PostgreSQL and SQLite (guarantees 1, 3, 6 and outcomes)."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from tests.support import AllPorts, Workers, run_cli, wait_for, write_config
from tests.system.sysjobs import starts

pytestmark = pytest.mark.system

EVERY_SECOND = "* * * * * *"


def runs_of(store: AllPorts, job: str) -> list:  # type: ignore[type-arg]
    return store.list_runs(job=job, limit=10_000)


def test_three_replicas_start_each_slot_exactly_once(
    tmp_path: Path, db_url: str, workers: Workers, starts_file: Path
) -> None:
    config = write_config(
        tmp_path / "jr.toml",
        db_url,
        [
            {"name": "tick-async", "func": "sysjobs:noop_async", "cron": EVERY_SECOND},
            {"name": "tick-sync", "func": "sysjobs:noop_sync", "cron": EVERY_SECOND},
        ],
    )
    procs = [workers.start(config) for _ in range(3)]
    begin = datetime.now(UTC)
    time.sleep(6)
    stopping = datetime.now(UTC)  # slots are recorded 0.5 s ahead: later ones stay queued
    for p in procs:
        p.signal(signal.SIGTERM)
    assert [p.wait() for p in procs] == [0, 0, 0]
    store = AllPorts.from_url(db_url)
    try:
        for job in ("tick-async", "tick-sync"):
            rows = [
                r
                for r in runs_of(store, job)
                if begin + timedelta(seconds=1) < r.scheduled_for < stopping
            ]
            slots = Counter((r.scheduled_for, r.attempt) for r in rows)
            assert slots and max(slots.values()) == 1, "a slot has two rows"
            assert {r.status for r in rows} <= {"succeeded", "skipped"}
            times = sorted(r.scheduled_for for r in rows)
            gaps = [b - a for a, b in pairwise(times)]
            assert all(g == timedelta(seconds=1) for g in gaps), f"missing slots: {times}"
        started = Counter(
            (s["job"], s["slot"], s["attempt"])
            for s in starts(str(starts_file))
            if s["event"] == "start"
        )
        assert started and max(started.values()) == 1, "a slot was started twice"
        # Slots are claimed up to CLAIM_AHEAD early, but a job never begins before its slot's
        # time (the database's clock is this host's; 1 ms for rounding).
        early = [
            (s["job"], s["slot"], round(datetime.fromisoformat(s["slot"]).timestamp() - s["t"], 4))
            for s in starts(str(starts_file))
            if s["event"] == "start"
            and s["t"] < datetime.fromisoformat(s["slot"]).timestamp() - 0.001
        ]
        assert early == [], f"jobs began before their slot (job, slot, seconds early): {early}"
        workers_used = {s["worker"] for s in starts(str(starts_file))}
        assert len(workers_used) >= 2, "the load should spread over replicas"
    finally:
        store.close()


def test_sync_job_logs_carry_the_run_context(tmp_path: Path, pg_url: str, workers: Workers) -> None:
    config = write_config(
        tmp_path / "jr.toml",
        pg_url,
        [{"name": "s", "func": "sysjobs:noop_sync", "cron": EVERY_SECOND}],
    )
    proc = workers.start(config)
    assert wait_for(lambda: bool(proc.find("sync job says hello")), 10)
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    line = proc.find("sync job says hello")[0]
    assert line["job"] == "s" and line["logger"] == "sysjobs"
    assert {"run_id", "attempt", "scheduled_for", "worker_id"} <= set(line)
    summary = [e for e in proc.find("run finished") if e["run_id"] == line["run_id"]]
    assert summary[0]["outcome"] == "succeeded" and "duration_seconds" in summary[0]


def test_failures_timeouts_and_retries_produce_the_right_rows(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    jobs = [
        {
            "name": "flaky",
            "func": "sysjobs:fail_until",
            "kwargs": {"attempt": 2},
            "retries": 2,
            "retry_backoff": "0.2s",
        },
        {"name": "broken", "func": "sysjobs:fail", "retries": 1, "retry_backoff": "0.1s"},
        {
            "name": "slow-async",
            "func": "sysjobs:sleep_async",
            "kwargs": {"seconds": 30},
            "timeout": "0.5s",
        },
        {
            "name": "slow-sync",
            "func": "sysjobs:sleep_sync",
            "kwargs": {"seconds": 30},
            "timeout": "0.5s",
        },
    ]
    config = write_config(tmp_path / "jr.toml", db_url, jobs)
    proc = workers.start(config)
    for job in jobs:
        result = run_cli("jobs", "trigger", job["name"], "-c", str(config))
        if result.returncode != 0:  # management CLI not there yet: enqueue through the store
            store = AllPorts.from_url(db_url)
            store.enqueue(job["name"])
            store.close()
    store = AllPorts.from_url(db_url)
    try:

        def settled() -> bool:
            return (
                len([r for r in runs_of(store, "flaky") if r.status == "succeeded"]) == 1
                and len([r for r in runs_of(store, "broken") if r.status == "failed"]) == 2
                and all(
                    runs_of(store, j) and runs_of(store, j)[0].status == "timed_out"
                    for j in ("slow-async", "slow-sync")
                )
            )

        assert wait_for(settled, 20), proc.log_path.read_text()[-3000:]
        flaky = sorted(runs_of(store, "flaky"), key=lambda r: r.attempt)
        assert [(r.attempt, r.status, r.trigger) for r in flaky] == [
            (1, "failed", "manual"),
            (2, "succeeded", "retry"),
        ]
        assert (
            flaky[0].error["type"] == "ValueError"
            and "attempt 1 fails" in flaky[0].error["message"]
        )
        assert "Traceback" in flaky[0].error["traceback"]
        broken = sorted(runs_of(store, "broken"), key=lambda r: r.attempt)
        assert [r.attempt for r in broken] == [1, 2]  # retries exhausted: no third attempt
        assert broken[0].error["type"] == "RuntimeError"
    finally:
        store.close()
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0


def test_sigterm_drains_running_jobs_and_exits_zero(
    tmp_path: Path, pg_url: str, workers: Workers
) -> None:
    config = write_config(
        tmp_path / "jr.toml",
        pg_url,
        [{"name": "work", "func": "sysjobs:sleep_async", "kwargs": {"seconds": 1.5}}],
        worker={"shutdown_grace": "10s"},
    )
    proc = workers.start(config)
    store = AllPorts.from_url(pg_url)
    try:
        run = store.enqueue("work")
        assert wait_for(lambda: store.get_run(run.id).status == "running", 10)
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert store.get_run(run.id).status == "succeeded"
        assert store.list_workers() == [] and store.list_locks() == []
    finally:
        store.close()


def test_sigterm_past_grace_cancels_and_requeues(
    tmp_path: Path, pg_url: str, workers: Workers
) -> None:
    config = write_config(
        tmp_path / "jr.toml",
        pg_url,
        [{"name": "long", "func": "sysjobs:sleep_async", "kwargs": {"seconds": 60}, "retries": 1}],
        worker={"shutdown_grace": "0.5s"},
    )
    proc = workers.start(config)
    store = AllPorts.from_url(pg_url)
    try:
        run = store.enqueue("long")
        assert wait_for(lambda: store.get_run(run.id).status == "running", 10)
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        first = store.get_run(run.id)
        assert first.status == "cancelled"
        retry = [r for r in runs_of(store, "long") if r.attempt == 2]
        assert retry and retry[0].status == "queued"
        assert store.list_locks() == []
    finally:
        store.close()


def test_second_signal_exits_at_once(tmp_path: Path, pg_url: str, workers: Workers) -> None:
    config = write_config(
        tmp_path / "jr.toml",
        pg_url,
        [{"name": "long", "func": "sysjobs:sleep_sync", "kwargs": {"seconds": 60}}],
        worker={"shutdown_grace": "60s"},
    )
    proc = workers.start(config)
    store = AllPorts.from_url(pg_url)
    try:
        run = store.enqueue("long")
        assert wait_for(lambda: store.get_run(run.id).status == "running", 10)
    finally:
        store.close()
    proc.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.proc.poll() is None  # still draining
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 5
