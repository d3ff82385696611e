"""Queue behaviour with real worker processes: a job without cron runs its queued runs at once
(up to the worker's capacity); `jobs list` shows each job's effective overlap; a run of higher
priority overtakes a backlog."""

from __future__ import annotations

import bisect
import json
import signal
import threading
import time
from datetime import datetime, timedelta
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


class RunningSampler:
    """Samples `job_runs` every few milliseconds from a thread: the most runs of each
    (job, concurrency key) seen running in one snapshot. A run is running from the commit
    of its claim to that of its outcome (or of the takeover that records it lost), the same
    transactions that take and release its lease, so a snapshot counts held leases."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        self.most: dict[tuple[str, str | None], int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RunningSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()

    def _loop(self) -> None:
        query = (
            sa.select(job_runs.c.job_name, job_runs.c.concurrency_key, sa.func.count())
            .where(job_runs.c.status == "running")
            .group_by(job_runs.c.job_name, job_runs.c.concurrency_key)
        )
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                for job, key, n in conn.execute(query):
                    self.most[job, key] = max(self.most.get((job, key), 0), n)
                conn.rollback()
                self.samples += 1
                time.sleep(0.005)


def most_in_window(starts: list[datetime], window: timedelta) -> int:
    """The most starts in any half-open window [t, t + window)."""
    starts = sorted(starts)
    best = 0
    for i, first in enumerate(starts):
        j = bisect.bisect_left(starts, first + window, lo=i)
        best = max(best, j - i)
    return best


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_per_key_limits_and_rate_limits_hold_across_replicas_while_they_are_killed(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    """3 replicas; one is SIGKILLed and one SIGTERMed while they work, each replaced. From
    `job_runs`: never more than max_per_key runs of a tenant at once (sampled, and from the
    runs' own start and finish times), never more than the rate limit's starts in any
    window of its duration, and every run ends."""
    jobs = [
        {
            "name": "sync",
            "func": "sysjobs:tenant_sleep",
            "concurrency_key": "tenant",
            "max_per_key": 2,
        },
        {
            "name": "mail",
            "func": "sysjobs:tenant_noop",
            "concurrency_key": "tenant",
            "rate_limit": "4/1s",
        },
    ]
    config = write_config(tmp_path / "jr.toml", db_url, jobs, worker={"concurrency": 8})
    store = AllPorts.from_url(db_url)
    try:
        migrate_and_publish(store, config)
        tenants = [{"tenant": f"t{i % 3}"} for i in range(60)]
        synced = store.enqueue_many("sync", tenants)
        mailed = store.enqueue_many("mail", tenants[:40])
        with RunningSampler(db_url) as sampler:
            replicas = [workers.start(config) for _ in range(3)]
            time.sleep(2)
            replicas[0].signal(signal.SIGKILL)
            workers.start(config)
            time.sleep(2)
            replicas[1].signal(signal.SIGTERM)
            workers.start(config)
            ids = synced + mailed
            final = lambda: all(store.get_run(i).status not in ("queued", "running") for i in ids)  # noqa: E731
            assert wait_for(final, 90)
        assert sampler.samples > 100
        assert {k: n for k, n in sampler.most.items() if k[0] == "sync"} and all(
            n <= 2 for (job, _), n in sampler.most.items() if job == "sync"
        ), sampler.most
        runs = store.list_runs(limit=1000)
        for tenant in ("t0", "t1", "t2"):
            spans = [
                (r.started_at + EPSILON, r.finished_at)
                for r in runs
                if r.job_name == "sync" and r.concurrency_key == tenant
                if r.started_at and r.finished_at
            ]
            assert len(spans) >= 20 and most_at_once(spans) <= 2, (tenant, spans)
            starts = [
                r.started_at
                for r in runs
                if r.job_name == "mail" and r.concurrency_key == tenant and r.started_at
            ]
            assert len(starts) >= 13 and most_in_window(starts, timedelta(seconds=1)) <= 4
            # the limit is reached, not just respected: the runs of a tenant took >= 3 s
            assert max(starts) - min(starts) >= timedelta(seconds=3)
        statuses = {r.status for r in runs if r.id in set(ids)}
        assert statuses <= {"succeeded", "lost", "cancelled"}, statuses
    finally:
        store.close()


# A run's started_at is its claim transaction's start and its predecessor's finished_at its
# outcome transaction's start: a claim that began just before the outcome committed and
# took the freed lease after it carries an earlier time. The sampler above is exact.
EPSILON = timedelta(milliseconds=50)


@pytest.mark.parametrize("db_url", ["postgresql", "sqlite"], indirect=True)
def test_a_replica_serving_one_queue_leaves_the_others_and_an_unserved_queue_is_shown(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    jobs = [
        {"name": "light", "func": "sysjobs:noop_async"},
        {"name": "render", "func": "sysjobs:noop_async", "queue": "heavy"},
    ]
    light_only = write_config(tmp_path / "light.toml", db_url, jobs, worker={"queues": ["default"]})
    heavy_only = write_config(tmp_path / "heavy.toml", db_url, jobs, worker={"queues": ["heavy"]})
    store = AllPorts.from_url(db_url)
    try:
        first = workers.start(light_only)
        light = store.enqueue_many("light", [None] * 5)
        heavy = store.enqueue_many("render", [None] * 5)
        assert wait_for(lambda: all(store.get_run(i).status == "succeeded" for i in light), 30)
        time.sleep(1)
        assert {store.get_run(i).status for i in heavy} == {"queued"}
        listed = run_cli("jobs", "list", "-c", str(light_only), "--json")
        served = {j["name"]: (j["queue"], j["queue_served"]) for j in json.loads(listed.stdout)}
        assert served == {"light": ("default", True), "render": ("heavy", False)}
        text = run_cli("jobs", "list", "-c", str(light_only))
        assert "heavy (no live worker)" in text.stdout and "queue 'heavy'" in text.stderr
        shown = run_cli("runs", "show", str(heavy[0]), "-c", str(light_only), "--json")
        waiting = json.loads(shown.stdout)["waiting"]
        assert "queue 'heavy' is served by no live worker" in waiting
        second = workers.start(heavy_only)
        assert wait_for(lambda: all(store.get_run(i).status == "succeeded" for i in heavy), 30)
        light += store.enqueue_many("light", [None] * 5)
        assert wait_for(lambda: all(store.get_run(i).status == "succeeded" for i in light), 30)
        ran_on = (
            {store.get_run(i).worker_id for i in light},
            {store.get_run(i).worker_id for i in heavy},
        )
        assert len(ran_on[0]) == len(ran_on[1]) == 1 and ran_on[0] != ran_on[1]
    finally:
        store.close()
    for proc in (first, second):
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0


@pytest.mark.parametrize(
    ("args", "said"),
    [
        # the job's published parameters are checked first: tenant is a required string
        (("jobs", "trigger", "sync", "--kwargs", "{}"), "parameter 'tenant' (string)"),
        (("jobs", "trigger", "sync", "--kwargs", '{"tenant": null}'), "'tenant' must be string"),
        (
            ("jobs", "trigger", "sync", "--kwargs", '{"tenant": "a"}', "--concurrency-key", ""),
            "1 to 200 characters",
        ),
        (("jobs", "trigger", "plain", "--concurrency-key", "k"), "has no concurrency_key"),
        (("runs", "list", "--priority", "high"), "--priority"),
        (("runs", "list", "--priority", "2000000"), "priority"),
    ],
)
def test_bad_queue_arguments_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, sqlite_url: str, args: tuple[str, ...], said: str
) -> None:
    jobs = [
        {
            "name": "sync",
            "func": "sysjobs:tenant_noop",
            "concurrency_key": "tenant",
            "max_per_key": 1,
        },
        {"name": "plain", "func": "sysjobs:noop_async"},
    ]
    config = write_config(tmp_path / "jr.toml", sqlite_url, jobs)
    store = AllPorts.from_url(sqlite_url)
    try:
        migrate_and_publish(store, config)
        done = run_cli(*args, "-c", str(config))
        assert done.returncode == 2, (done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0], done.stderr
        assert store.list_runs() == []
    finally:
        store.close()


def test_check_refuses_bad_limits_and_warns_of_unknown_queues(tmp_path: Path) -> None:
    bad = write_config(
        tmp_path / "bad.toml",
        "sqlite:///x.db",
        [{"name": "m", "func": "sysjobs:noop_async", "rate_limit": "lots"}],
    )
    done = run_cli("check", "-c", str(bad))
    assert done.returncode == 2 and "jobs[0].rate_limit" in done.stderr, done.stderr
    odd = write_config(
        tmp_path / "odd.toml",
        "sqlite:///x.db",
        [{"name": "m", "func": "sysjobs:noop_async", "queue": "heavy"}],
        worker={"queues": ["haevy"]},
    )
    done = run_cli("check", "-c", str(odd))
    assert done.returncode == 0, done.stderr
    assert "no job uses queue 'haevy'" in done.stderr
    assert "does not run m" in done.stdout
