"""Run history: reading runs and their attempts, the last outcome per job, pruning."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TypedDict, Unpack

import sqlalchemy as sa

from jobrunner.converters import check_priority, check_text
from jobrunner.errors import BadInput, RunNotFound
from jobrunner.jobconfig import DEFAULT_QUEUE
from jobrunner.records import Run
from jobrunner.store.engine import db_now
from jobrunner.store.sql import Op
from jobrunner.store.tables import FINAL_STATUSES, RUN_STATUSES, job_runs, jobrunner_jobs

MAX_RUN_ID = 2**63 - 1  # job_runs.id is a BIGINT: no run has an id outside 1..MAX_RUN_ID


def check_run_id(run_id: int) -> None:
    """Refuse an id no run can have before it reaches the database: RunNotFound for an
    integer outside 1..MAX_RUN_ID (a bigint would overflow), BadInput for a non-integer."""
    if isinstance(run_id, bool) or not isinstance(run_id, int):
        raise BadInput(f"a run id is an integer, got {run_id!r:.40}")
    if not 1 <= run_id <= MAX_RUN_ID:
        raise RunNotFound(f"no run with id {run_id} (run ids are 1 to {MAX_RUN_ID})")


def get_run(run_id: int) -> Op[Run]:
    """One run (RunNotFound if there is none)."""
    check_run_id(run_id)
    row = (yield sa.select(job_runs).where(job_runs.c.id == run_id)).one_or_none()
    if row is None:
        raise RunNotFound(f"no run with id {run_id}")
    return Run(**row._mapping)


class RunFilters(TypedDict, total=False):
    """What `list_runs` filters by (the one definition of these filters)."""

    job: str | None
    status: str | None
    since: datetime | None  # enqueued at or after
    correlation_id: str | None
    queue: str | None  # runs of the jobs of this queue (by the catalog)
    priority: int | None  # runs of exactly this priority
    before_id: int | None  # keyset pagination: runs older than this one (id below it)


def list_runs(*, limit: int = 50, **filters: Unpack[RunFilters]) -> Op[list[Run]]:
    """Runs newest first, filtered (`RunFilters`); an unknown status is BadInput (a
    ValueError)."""
    status = filters.get("status")
    if status is not None and status not in RUN_STATUSES:
        raise BadInput(f"unknown status {status!r}: allowed {', '.join(RUN_STATUSES)}")
    check_priority(filters.get("priority"))
    for name in ("job", "correlation_id", "queue"):
        check_text(f"the {name} filter", filters.get(name), least=0)
    query = sa.select(job_runs).order_by(job_runs.c.id.desc()).limit(limit)
    equal = {
        "job": job_runs.c.job_name,
        "status": job_runs.c.status,
        "correlation_id": job_runs.c.correlation_id,
        "priority": job_runs.c.priority,
    }
    for name, column in equal.items():
        if filters.get(name) is not None:
            query = query.where(column == filters.get(name))
    if (since := filters.get("since")) is not None:
        query = query.where(job_runs.c.enqueued_at >= since)
    if (before := filters.get("before_id")) is not None:
        query = query.where(job_runs.c.id < before)
    if (queue := filters.get("queue")) is not None:
        named = sa.func.coalesce(jobrunner_jobs.c.definition["queue"].as_string(), DEFAULT_QUEUE)
        of_queue = sa.select(jobrunner_jobs.c.name).where(named == queue)
        query = query.where(job_runs.c.job_name.in_(of_queue))
    return [Run(**r._mapping) for r in (yield query)]


def run_attempts(run_id: int) -> Op[list[Run]]:
    """Every attempt of the run, oldest first (RunNotFound if there is no such run).

    A scheduled run's attempts share its slot (job_name, schedule_key, scheduled_for: the
    slot key's index); a manual run and
    its retries are linked by `retry_of`, followed both ways.
    """
    run = yield from get_run(run_id)
    if run.scheduled_for is not None:
        rows = yield (
            sa.select(job_runs)
            .where(
                job_runs.c.job_name == run.job_name,
                job_runs.c.schedule_key == run.schedule_key,
                job_runs.c.scheduled_for == run.scheduled_for,
            )
            .order_by(job_runs.c.attempt, job_runs.c.id)
        )
        return [Run(**r._mapping) for r in rows]
    chain = {run.id: run}
    first = run
    while first.retry_of is not None and first.retry_of not in chain:
        row = (yield sa.select(job_runs).where(job_runs.c.id == first.retry_of)).one_or_none()
        if row is None:  # pruned
            break
        first = chain.setdefault(row.id, Run(**row._mapping))
    frontier = list(chain)
    while frontier:
        rows = yield sa.select(job_runs).where(job_runs.c.retry_of.in_(frontier))
        found = [Run(**r._mapping) for r in rows if r.id not in chain]
        chain.update((r.id, r) for r in found)
        frontier = [r.id for r in found]
    return sorted(chain.values(), key=lambda r: (r.attempt, r.id))


def last_outcomes(dialect: str = "postgresql") -> Op[dict[str, Run]]:
    """The newest finished run of each job. On PostgreSQL one index walk per catalogued job
    (LATERAL: newest first by id until a final status), not a scan of the history."""
    final = job_runs.c.status.in_(FINAL_STATUSES)
    if dialect == "postgresql":
        newest = (
            sa.select(job_runs)
            .where(job_runs.c.job_name == jobrunner_jobs.c.name, final)
            .order_by(job_runs.c.id.desc())
            .limit(1)
            .lateral("newest")
        )
        rows = yield sa.select(newest).select_from(jobrunner_jobs.join(newest, sa.true()))
    else:
        ids = sa.select(sa.func.max(job_runs.c.id)).where(final).group_by(job_runs.c.job_name)
        rows = yield sa.select(job_runs).where(job_runs.c.id.in_(ids))
    return {r.job_name: Run(**r._mapping) for r in rows}


def runs_by_id(ids: Sequence[int]) -> Op[list[Run]]:
    """The runs with these ids (those that exist), by id."""
    if not ids:
        return []
    rows = yield sa.select(job_runs).where(job_runs.c.id.in_(list(ids))).order_by(job_runs.c.id)
    return [Run(**r._mapping) for r in rows]


def outcome_counts(since: datetime) -> Op[dict[str, int]]:
    """Runs enqueued since `since`, by status (the enqueue time's index: no scan)."""
    found = yield (
        sa.select(job_runs.c.status, sa.func.count())
        .where(job_runs.c.enqueued_at >= since)
        .group_by(job_runs.c.status)
    )
    return {str(status): int(n) for status, n in found}


def has_runs(job: str) -> Op[bool]:
    """Whether any run of `job` is recorded (a job retired from the catalog may have some)."""
    found = (yield sa.select(job_runs.c.id).where(job_runs.c.job_name == job).limit(1)).first()
    return found is not None


PRUNE_CHUNK = 5_000  # runs deleted per transaction


def prune(
    dialect: str,
    *,
    older_than: timedelta | None,
    keep_last: int = 0,
    since: datetime | None = None,
    limit: int = PRUNE_CHUNK,
) -> Op[tuple[int, datetime | None]]:
    """Delete up to `limit` of the oldest finished runs older than `older_than` (enqueued
    at or after `since`), keeping the newest `keep_last` per job; returns how many, and the
    latest `enqueued_at` among them (the `since` of the next chunk). A chunk is a walk of
    `ix_job_runs_enqueued` from `since`: a run finished before the cutoff was enqueued
    before it, so the chunks never read the history that stays."""
    if older_than is None:
        return 0, since
    cutoff = db_now(-older_than.total_seconds())
    cond = (
        (job_runs.c.enqueued_at < cutoff)
        & job_runs.c.status.in_(FINAL_STATUSES)
        & (job_runs.c.finished_at < cutoff)
    )
    if since is not None:
        cond = cond & (job_runs.c.enqueued_at >= since)
    if keep_last > 0:
        newer = sa.alias(job_runs, "newer")
        rank = (
            sa.select(sa.func.count())
            .where(
                newer.c.job_name == job_runs.c.job_name,
                newer.c.id > job_runs.c.id,
                newer.c.status.in_(FINAL_STATUSES),  # queued/running ones do not count
            )
            .scalar_subquery()
        )
        cond = cond & (rank >= keep_last)
    chunk = sa.select(job_runs.c.id).where(cond).order_by(job_runs.c.enqueued_at).limit(limit)
    delete = job_runs.delete().where(job_runs.c.id.in_(chunk.scalar_subquery()))
    if dialect == "postgresql":  # one row back: 5,000 read into Python held the GIL up to
        # 70 ms per chunk, a delay for the claims of the pruning worker
        gone = delete.returning(job_runs.c.enqueued_at).cte("gone")
        count, newest = (yield sa.select(sa.func.count(), sa.func.max(gone.c.enqueued_at))).one()
        return int(count), newest or since
    times = (yield delete.returning(job_runs.c.enqueued_at)).scalars().all()
    return len(times), max(times, default=since)
