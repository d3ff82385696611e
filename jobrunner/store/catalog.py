"""The catalog the workers publish: their jobs (`jobrunner_jobs`) and themselves
(`jobrunner_workers`), so that the CLI, clients and the router see jobs without the TOML."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from jobrunner.converters import check_job_name
from jobrunner.errors import JobNotFound
from jobrunner.jobconfig import DEFAULT_QUEUE
from jobrunner.records import CatalogEntry, WorkerInfo, WorkerRow
from jobrunner.store.engine import db_now
from jobrunner.store.leases import release
from jobrunner.store.queue import wake
from jobrunner.store.sql import Op, insert
from jobrunner.store.tables import job_locks, job_runs, jobrunner_jobs, jobrunner_workers

FORGET_WORKERS_AFTER = 3600.0  # seconds a dead worker's row stays visible as stale


def clock() -> Op[datetime]:
    """The database's clock (UTC)."""
    value: datetime = (yield sa.select(db_now())).scalar_one()
    return value


def register_worker(dialect: str, info: WorkerInfo) -> Op[datetime]:
    """Insert or refresh this worker's row (started_at and last_seen = now); returns now."""
    now = yield from clock()
    values = {
        "hostname": info.hostname,
        "pid": info.pid,
        "version": info.version,
        "config_hash": info.config_hash,
        "jobs": dict(info.jobs),
        "queues": None if info.queues is None else list(info.queues),
        "state": "running",
        "last_seen": now,
    }
    stmt = insert(dialect, jobrunner_workers).values(
        worker_id=info.worker_id, started_at=now, **values
    )
    yield stmt.on_conflict_do_update(index_elements=["worker_id"], set_=values)
    return now


def set_worker_state(worker_id: str, state: str) -> Op[None]:
    yield (
        jobrunner_workers.update()
        .where(jobrunner_workers.c.worker_id == worker_id)
        .values(state=state)
    )


def deregister_worker(dialect: str, worker_id: str) -> Op[None]:
    """Release every lease the worker holds and delete its row."""
    released = (yield release(job_locks.c.worker_id == worker_id)).rowcount
    yield jobrunner_workers.delete().where(jobrunner_workers.c.worker_id == worker_id)
    if released:  # runs waiting for those leases can start on a peer now
        yield from wake(dialect, "released")


def list_workers() -> Op[list[WorkerRow]]:
    found = yield sa.select(jobrunner_workers).order_by(jobrunner_workers.c.started_at)
    return [WorkerRow(**r._mapping) for r in found]


def forget_workers(lease_ttl: float) -> Op[None]:
    """Forget workers not seen for `FORGET_WORKERS_AFTER` (listed as stale until then)."""
    yield jobrunner_workers.delete().where(
        jobrunner_workers.c.last_seen < db_now(-max(FORGET_WORKERS_AFTER, 10 * lease_ttl))
    )


def publish_catalog(dialect: str, entries: Sequence[CatalogEntry], worker_id: str) -> Op[None]:
    """Upsert each job's definition (the newest publisher wins); `paused` is kept as is."""
    if not entries:
        return
    stmt = insert(dialect, jobrunner_jobs).values(
        name=sa.bindparam("n"),
        cron=sa.bindparam("c"),
        timezone=sa.bindparam("tz"),
        config_hash=sa.bindparam("h"),
        definition=sa.bindparam("d", type_=sa.JSON()),
        parameters=sa.bindparam("p", type_=sa.JSON(none_as_null=True)),
        published_by=worker_id,
        updated_at=db_now(),
    )
    update = {
        c: stmt.excluded[c]
        for c in ("cron", "timezone", "config_hash", "definition", "parameters", "published_by")
    }
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"], set_={**update, "updated_at": db_now()}
    )
    # executemany: any number of jobs (a single VALUES list caps at 65535 parameters)
    yield (
        stmt,
        [
            {
                "n": e.name,
                "c": e.cron,
                "tz": e.timezone,
                "h": e.config_hash,
                "d": dict(e.definition),
                "p": None if e.parameters is None else list(e.parameters),
            }
            for e in entries
        ],
    )


def catalog_state(live_within: float) -> Op[dict[str, tuple[str, bool]]]:
    """Each catalogued job's definition hash, and whether the worker that published it
    is still live (seen within `live_within` seconds)."""
    live = (
        sa.select(jobrunner_workers.c.worker_id)
        .where(
            jobrunner_workers.c.worker_id == jobrunner_jobs.c.published_by,
            jobrunner_workers.c.last_seen >= db_now(-live_within),
        )
        .exists()
    )
    found = yield sa.select(jobrunner_jobs.c.name, jobrunner_jobs.c.config_hash, live)
    return {name: (config_hash, bool(alive)) for name, config_hash, alive in found}


def retire_jobs(live_within: float) -> Op[list[str]]:
    """Remove catalog entries that no live worker defines any more.

    A worker is live if it was seen within `live_within` seconds. Queued runs of a retired
    job are recorded `cancelled` (reason `job removed`), so none waits forever. Returns the
    retired job names.
    """
    live = (
        yield sa.select(jobrunner_workers.c.jobs).where(
            jobrunner_workers.c.last_seen >= db_now(-live_within)
        )
    ).scalars()
    defined = {name for jobs in live for name in jobs}
    if not defined:
        return []  # no live worker: nothing can be decided
    gone = list(
        (
            yield jobrunner_jobs.delete()
            .where(jobrunner_jobs.c.name.not_in(defined))
            .returning(jobrunner_jobs.c.name)
        ).scalars()
    )
    if gone:
        yield (
            job_runs.update()
            .where(job_runs.c.job_name.in_(gone), job_runs.c.status == "queued")
            .values(status="cancelled", reason="job removed", finished_at=db_now())
        )
    return gone


def list_jobs() -> Op[list[CatalogEntry]]:
    """The catalog, by name."""
    found = yield sa.select(jobrunner_jobs).order_by(jobrunner_jobs.c.name)
    return [CatalogEntry(**r._mapping) for r in found]


def get_job(name: str) -> Op[CatalogEntry]:
    """One catalog entry (JobNotFound if there is none)."""
    check_job_name(name)
    row = (yield sa.select(jobrunner_jobs).where(jobrunner_jobs.c.name == name)).one_or_none()
    if row is None:
        raise JobNotFound(f"no job named {name!r} in the catalog")
    return CatalogEntry(**row._mapping)


def set_paused(name: str, paused: bool) -> Op[None]:
    """Pause or resume a job for every replica (they read the flag when they claim)."""
    check_job_name(name)
    result = yield (
        jobrunner_jobs.update().where(jobrunner_jobs.c.name == name).values(paused=paused)
    )
    if result.rowcount == 0:
        raise JobNotFound(f"no job named {name!r} in the catalog")


def served_state(live_within: float) -> Op[tuple[dict[str, str], list[WorkerRow]]]:
    """Each catalogued job's queue, and the workers that claim runs (seen within
    `live_within` seconds, not draining): what tells a queue no live worker serves."""
    queue = sa.func.coalesce(jobrunner_jobs.c.definition["queue"].as_string(), DEFAULT_QUEUE)
    queues = {n: str(q) for n, q in (yield sa.select(jobrunner_jobs.c.name, queue))}
    live = yield sa.select(jobrunner_workers).where(
        jobrunner_workers.c.last_seen >= db_now(-live_within),
        jobrunner_workers.c.state == "running",
    )
    return queues, [WorkerRow(**r._mapping) for r in live]
