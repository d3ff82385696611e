"""Final states of runs: written by their holder (`finish`, fenced) or, for a holder that
died, by any peer that takes its expired leases over (`reap`). Retries are queued in the
same transaction."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from jobrunner.policy import retry_after
from jobrunner.records import Outcome, Run
from jobrunner.store.direct import Direct
from jobrunner.store.engine import db_now
from jobrunner.store.leases import lock_name, release
from jobrunner.store.queue import DONE_CHANNEL, queue_retries, wake
from jobrunner.store.sql import Op, any_of, json_text, rows, unnest
from jobrunner.store.tables import job_locks, job_runs


def finish(dialect: str, worker_id: str, outcomes: Sequence[Outcome]) -> Op[set[int]]:
    """Write final outcomes and release their leases.

    Fenced: an outcome is written only if this worker still holds that lease with that
    fence token; the returned set holds the run ids whose outcome was written (the others
    were taken over and are refused). Retries (`retry_in`) are queued as attempt + 1.
    """
    if not outcomes:
        return set()
    # A lease row still names this worker and this run only if nobody took it over:
    # the reaper clears worker_id, a takeover or `replace` changes it and the run_id.
    ids = [o.lease.run_id for o in outcomes]
    release_held, succeeded = _finish_statements(dialect)
    released = {(r[0], r[1]) for r in (yield release_held, {"worker": worker_id, "ids": ids})}
    mine = [
        o for o in outcomes if (lock_name(o.lease.job_name, o.lease.key), o.lease.slot) in released
    ]
    if not mine:
        return set()
    # Successes with nothing else to record: the common case by id, those with a result
    # by row; each in one of the two, never both.
    successes = [o for o in mine if _success(o)]
    plain = [o.lease.run_id for o in successes if o.result is None]
    if plain:  # the common case in one statement
        # By id only: these runs are running, as this worker held their leases until
        # the release above (every path that ends a run moves or releases its lease
        # in the same transaction). A `status` condition here would let the planner
        # scan the running runs' index instead, which stale statistics make it do.
        yield succeeded, {"ids": plain}
    valued = [{"rid": o.lease.run_id, "res": o.result} for o in successes if o.result is not None]
    if valued:  # successes that returned a value: one statement on PostgreSQL as well
        yield _valued_statement(dialect), rows(dialect, valued)
    written = set(plain) | {v["rid"] for v in valued}
    others = [o for o in mine if o.lease.run_id not in written]
    if others:
        yield (
            _other_statement(dialect),
            [
                {
                    "rid": o.lease.run_id,
                    "st": o.status,
                    "err": o.error,
                    "why": o.reason,
                    "res": o.result,
                    "note": o.result_note,
                }
                for o in others
            ],
        )
    retries = {o.lease.run_id: o.retry_in for o in mine if o.retry_in is not None}
    links = {o.lease.run_id: o.trace for o in mine if o.trace is not None}
    yield from queue_retries(dialect, retries, links)
    return {o.lease.run_id for o in mine}


def _success(outcome: Outcome) -> bool:
    """A success with nothing to record but perhaps its result."""
    return outcome.status == "succeeded" and not outcome.reason and outcome.result_note is None


@functools.cache
def _finish_statements(dialect: str) -> tuple[Direct, Direct]:
    """Built once: release this worker's leases of `:ids` (RETURNING the rows released),
    and record the runs `:ids` succeeded."""
    held = (job_locks.c.worker_id == sa.bindparam("worker", type_=sa.String())) & any_of(
        dialect, job_locks.c.run_id, "ids"
    )
    returned: list[Any] = [job_locks.c.job_name, job_locks.c.slot]
    if dialect == "postgresql":  # wakes `Client.wait` (one notification per transaction)
        returned.append(sa.func.pg_notify(DONE_CHANNEL, ""))
    release_held = release(held).returning(*returned)
    succeeded = (
        job_runs.update()
        .where(any_of(dialect, job_runs.c.id, "ids"))
        .values(status="succeeded", finished_at=db_now())
    )
    return Direct(release_held), Direct(succeeded)


@functools.cache
def _valued_statement(dialect: str) -> sa.Update:
    """Record the runs `rid` succeeded with their results `res` (JSON text): one statement of
    fixed text on PostgreSQL (see `sql.rows`), executemany on SQLite."""
    if dialect == "postgresql":
        given = unnest(("rid", sa.BigInteger()), ("res", sa.Text()))
        rid, res = given.c.rid, given.c.res
    else:
        rid, res = sa.bindparam("rid"), sa.bindparam("res", type_=sa.Text())
    return (
        job_runs.update()
        .where(job_runs.c.id == rid)
        .values(status="succeeded", result=json_text(dialect, res), finished_at=db_now())
    )


@functools.cache
def _other_statement(dialect: str) -> sa.Update:
    """Record one run's outcome of any kind, by row (executemany): the rare cases."""
    return (
        job_runs.update()
        .where(job_runs.c.id == sa.bindparam("rid"), job_runs.c.status == "running")
        .values(
            status=sa.bindparam("st"),
            error=sa.bindparam("err", type_=sa.JSON(none_as_null=True)),
            reason=sa.func.coalesce(sa.bindparam("why"), job_runs.c.reason),
            result=json_text(dialect, sa.bindparam("res", type_=sa.Text())),
            result_note=sa.bindparam("note", type_=sa.String()),
            finished_at=db_now(),
            # a run claimed ahead and cancelled before its time never began
            started_at=sa.case(
                (job_runs.c.started_at > db_now(), db_now()),
                else_=job_runs.c.started_at,
            ),
        )
    )


def reap(dialect: str, *, lease_ttl: float, orphans: bool = True) -> Op[list[Run]]:
    """Take over every expired lease and every orphaned running run.

    A lease whose holder stopped renewing (`expires_at < now`) is released; its run is
    recorded `lost` and, if attempts remain, queued again as attempt + 1 (`retry_after`).
    A run still `running` with no lease held for it and started more than `lease_ttl` ago
    is recorded `lost` too, so no run stays running forever. Rows are locked with SKIP
    LOCKED so replicas reaping together never double-handle one. Returns the runs lost.
    """
    expired = (
        yield sa.select(job_locks.c.job_name, job_locks.c.slot, job_locks.c.run_id)
        .where(job_locks.c.worker_id.is_not(None), job_locks.c.expires_at < db_now())
        .with_for_update(skip_locked=True)
    ).all()
    if expired:
        slots = [(e.job_name, e.slot) for e in expired]
        yield release(sa.tuple_(job_locks.c.job_name, job_locks.c.slot).in_(slots))
    lease_held = sa.exists().where(
        job_locks.c.run_id == job_runs.c.id, job_locks.c.worker_id.is_not(None)
    )
    which: sa.ColumnElement[bool] = job_runs.c.id.in_(
        [e.run_id for e in expired if e.run_id is not None]
    )
    if orphans:
        which = which | (~lease_held & (job_runs.c.started_at < db_now(-lease_ttl)))
    elif not expired:
        return []
    lost = (
        yield job_runs.update()
        .where(job_runs.c.status == "running", which)
        .values(status="lost", reason="lease expired", finished_at=db_now())
        .returning(*job_runs.c)
    ).all()
    runs = [Run(**r._mapping) for r in lost]
    if runs:
        yield from wake(dialect, "", DONE_CHANNEL)
    delays = {
        r.id: retry_after(status="lost", attempt=r.attempt, max_attempts=r.max_attempts)
        for r in runs
    }
    yield from queue_retries(dialect, {rid: d for rid, d in delays.items() if d is not None})
    return runs
