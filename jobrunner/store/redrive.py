"""Re-drive: a run that ended without success queued again, as a new attempt linked to it."""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from jobrunner.errors import JobNotFound, RunNotRetryable
from jobrunner.records import Run
from jobrunner.store.engine import db_now
from jobrunner.store.history import get_run, run_attempts
from jobrunner.store.queue import next_attempt, wake
from jobrunner.store.sql import Op, insert
from jobrunner.store.tables import SCHEDULED, SLOT_KEY, job_runs, jobrunner_jobs

RETRYABLE_STATUSES = ("failed", "timed_out", "lost", "cancelled", "skipped")


def retry_run(dialect: str, run_id: int) -> Op[Run]:
    """Queue the run again, as a new attempt linked to its newest one (`retry_of`): with its
    job, slot, kwargs, priority, concurrency key and correlation id, and the job's retries
    from here. Only a run whose newest attempt ended without success (`RETRYABLE_STATUSES`)
    can be retried; else RunNotRetryable. For a scheduled slot a retry raced by another returns
    the other's run (the slot key); two racing retries of a manual run may both be queued."""
    newest = (yield from run_attempts(run_id))[-1]
    if newest.status not in RETRYABLE_STATUSES:
        what = "is still" if newest.status in ("queued", "running") else "ended"
        raise RunNotRetryable(
            f"run {run_id} cannot be retried: its newest attempt (run {newest.id}) {what} "
            f"{newest.status}; only runs that ended {', '.join(RETRYABLE_STATUSES)} can be"
        )
    got = (yield _redrive_statement(dialect), {"rid": newest.id}).scalar_one_or_none()
    if got is None:  # a retry of the same attempt won the race (the slot key) or the job is gone
        again = (yield from run_attempts(run_id))[-1]
        if again.retry_of != newest.id:
            raise JobNotFound(f"no job named {newest.job_name!r} in the catalog")
        got = again.id
    yield from wake(dialect, "retry")
    return (yield from get_run(got))


@functools.cache
def _redrive_statement(dialect: str) -> Any:
    retries = sa.func.coalesce(jobrunner_jobs.c.definition["retries"].as_integer(), 0)
    columns, values = next_attempt(
        trigger=sa.literal("retry"),
        run_at=db_now(),
        status=sa.literal("queued"),
        reason=sa.literal("retried by request"),
        attempt=job_runs.c.attempt + 1,
        max_attempts=job_runs.c.attempt + 1 + retries,
        enqueued_at=db_now(),
        retry_of=job_runs.c.id,
    )
    source = (
        sa.select(*values)
        .select_from(job_runs.join(jobrunner_jobs, jobrunner_jobs.c.name == job_runs.c.job_name))
        .where(job_runs.c.id == sa.bindparam("rid"))
    )
    return (
        insert(dialect, job_runs)
        .from_select(columns, source)
        .on_conflict_do_nothing(index_elements=SLOT_KEY, index_where=SCHEDULED)
        .returning(job_runs.c.id)
    )
