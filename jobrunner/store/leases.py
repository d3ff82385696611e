"""Leases in `job_locks`: one row per (lease name, slot), held by one run of one worker at a
time. The name is the job's, or "JOB\x1fKEY" for a job with a concurrency key (`lock_name`):
its slots are per key value.

`expires_at` is always computed with the database's clock. A released row stays, so that its
fence token keeps growing on the next acquire; every write by a holder is conditioned on
still being the holder (worker, run and fence in the WHERE), so a worker that lost a lease
can neither renew it nor write its run's outcome.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from jobrunner.records import Lease, LockRow, Renewal, Run
from jobrunner.store.direct import Direct
from jobrunner.store.engine import db_now
from jobrunner.store.sql import Op, insert, rows, unnest
from jobrunner.store.tables import UTCDateTime, job_locks, job_runs, jobrunner_workers

KEY_SEP = "\x1f"  # between a job's name and a key value in a lease's name (never in a job name)


def lock_name(job: str, key: str) -> str:
    """The name of the leases of (job, key value); the job's own without a key."""
    return f"{job}{KEY_SEP}{key}" if key else job


def split_lock(name: str) -> tuple[str, str]:
    """(job, key value) of a lease's name."""
    job, _, key = name.partition(KEY_SEP)
    return job, key


def release(where: sa.ColumnElement[bool]) -> sa.Update:
    """Release leases: the row stays so the fence keeps growing on the next acquire."""
    return (
        job_locks.update()
        .where(where)
        .values(run_id=None, worker_id=None, acquired_at=None, expires_at=None)
    )


_HELD_LEASES = Direct(
    sa.select(job_locks.c.job_name, job_locks.c.slot, job_locks.c.run_id, job_locks.c.fence).where(
        job_locks.c.worker_id.is_not(None)
    )
)


def held_leases() -> Op[dict[tuple[str, str], dict[int, Lease]]]:
    """Every held lease (of any worker), by (job, key) and slot: what a claim decides with."""
    held: dict[tuple[str, str], dict[int, Lease]] = defaultdict(dict)
    for name, slot, run_id, fence in (yield _HELD_LEASES).all():
        job, key = split_lock(name) if KEY_SEP in name else (name, "")
        held[job, key][slot] = Lease(job_name=job, slot=slot, run_id=run_id, fence=fence, key=key)
    return held


def acquire(
    dialect: str,
    wanted: list[tuple[Run, str, int]],
    worker_id: str,
    lease_ttl: float,
    now: datetime,
) -> Op[tuple[list[Lease], datetime | None]]:
    """Take free lease rows (insert, or update a released row) in one statement for the
    runs in `wanted` (run, lease key, slot; see `policy.lane_key`). On PostgreSQL the same
    statement marks the runs that got a lease running (a data-modifying CTE: one round trip
    less per claim); on SQLite the claim starts them. Also returns the database's clock as
    the statement ended (`Claim.clock`)."""
    if not wanted:
        return [], None
    given = [
        {"j": lock_name(run.job_name, key), "s": slot, "r": run.id} for run, key, slot in wanted
    ]
    if dialect == "postgresql":
        params = rows(dialect, given, worker=worker_id, ttl=lease_ttl, now=now)
        got = (yield _acquire_and_start_statement(), params).all()
        clock = max((row[4] for row in got), default=None)
    else:
        params = rows(dialect, given, worker=worker_id, ttl=lease_ttl)
        got = (yield _acquire_statement(dialect), params).all()
        clock = datetime.now(UTC)  # SQLite's clock is this host's
    leases = []
    for name, slot, run_id, fence, *_ in got:
        job, key = split_lock(name)
        leases.append(Lease(job_name=job, key=key, slot=slot, run_id=run_id, fence=fence))
    return leases, clock


@functools.cache
def _acquire_statement(dialect: str) -> Any:
    """Take free lease rows: insert, or update a released row (`worker_id` NULL); RETURNING
    the leases taken. Built once per dialect; rows and lease given at execution."""
    worker = sa.bindparam("worker", type_=sa.String())
    expires = db_now(sa.bindparam("ttl", type_=sa.Float()))
    columns = ["job_name", "slot", "run_id", "worker_id", "fence", "acquired_at", "expires_at"]
    if dialect == "postgresql":
        # The rows as three array parameters: one statement text whatever the batch size,
        # prepared once by psycopg (a multi-row VALUES is re-rendered for every size).
        given = unnest(("j", sa.String()), ("s", sa.Integer()), ("r", sa.BigInteger()))
        source = sa.select(
            given.c.j, given.c.s, given.c.r, worker, sa.literal(1), db_now(), expires
        )
        stmt = insert(dialect, job_locks).from_select(columns, source)
    else:  # SQLite: executemany, batched by SQLAlchemy (insertmanyvalues)
        values = [sa.bindparam("j"), sa.bindparam("s"), sa.bindparam("r"), worker, 1, db_now()]
        stmt = insert(dialect, job_locks).values(
            dict(zip(columns, [*values, expires], strict=True))
        )
    return stmt.on_conflict_do_update(
        index_elements=["job_name", "slot"],
        set_={
            "run_id": stmt.excluded.run_id,
            "worker_id": stmt.excluded.worker_id,
            "fence": job_locks.c.fence + 1,
            "acquired_at": stmt.excluded.acquired_at,
            "expires_at": stmt.excluded.expires_at,
        },
        where=job_locks.c.worker_id.is_(None),
    ).returning(*_LEASE_COLUMNS)


_LEASE_COLUMNS = [job_locks.c[n] for n in ("job_name", "slot", "run_id", "fence")]


# A run claimed ahead of its `run_at` (see `WorkerPort.claim`) starts then, not at the claim.
_CLAIMED_AT = sa.bindparam("now", type_=UTCDateTime())
STARTED_AT = sa.case((job_runs.c.run_at > _CLAIMED_AT, job_runs.c.run_at), else_=_CLAIMED_AT)


@functools.cache
def _acquire_and_start_statement() -> Direct:
    """PostgreSQL: `_acquire_statement` as a data-modifying CTE whose leases' runs one UPDATE
    marks running (`:worker`, started at `:now`, the lease's fence); selects the leases."""
    taken = _acquire_statement("postgresql").cte("taken")
    start = (
        job_runs.update()
        .where(job_runs.c.id == taken.c.run_id)
        .values(
            status="running",
            worker_id=sa.bindparam("worker", type_=sa.String()),
            started_at=STARTED_AT,
            fence=taken.c.fence,
        )
    )
    clock = sa.func.clock_timestamp(type_=UTCDateTime())  # when the row was returned
    leases = sa.select(*(taken.c[c.name] for c in _LEASE_COLUMNS), clock)
    return Direct(leases.add_cte(start.cte("started")))


def replace(worker_id: str, moves: list[tuple[Run, Lease]], lease_ttl: float) -> Op[list[Lease]]:
    """Move a held lease to a new run (overlap `replace`) if its fence is unchanged; the old
    run is recorded cancelled (reason `replaced`). Returns the leases moved."""
    leases = []
    for run, old in moves:
        fence = (
            yield job_locks.update()
            .where(
                job_locks.c.job_name == lock_name(old.job_name, old.key),
                job_locks.c.slot == old.slot,
                job_locks.c.fence == old.fence,
            )
            .values(
                run_id=run.id,
                worker_id=worker_id,
                fence=job_locks.c.fence + 1,
                acquired_at=db_now(),
                expires_at=db_now(lease_ttl),
            )
            .returning(job_locks.c.fence)
        ).scalar_one_or_none()
        if fence is None:
            continue
        moved = Lease(job_name=run.job_name, key=old.key, slot=old.slot, run_id=run.id, fence=fence)
        leases.append(moved)
        yield (
            job_runs.update()
            .where(job_runs.c.id == old.run_id, job_runs.c.status == "running")
            .values(status="cancelled", reason="replaced", finished_at=db_now())
        )
    return leases


def renew(worker_id: str, lease_ttl: float) -> Op[Renewal]:
    """Extend every lease of this worker to now + lease_ttl and mark it seen.

    Returns the run ids whose leases it still holds (a run missing from `held` was taken
    over: cancel it, its outcome will be refused) and those an operator asked to cancel.
    """
    held = (
        yield job_locks.update()
        .where(job_locks.c.worker_id == worker_id)
        .values(expires_at=db_now(lease_ttl))
        .returning(job_locks.c.run_id)
    ).scalars()
    held_ids = frozenset(i for i in held if i is not None)
    seen = (
        yield jobrunner_workers.update()
        .where(jobrunner_workers.c.worker_id == worker_id)
        .values(last_seen=db_now())
    ).rowcount
    cancel: frozenset[int] = frozenset()
    if held_ids:
        asked = sa.select(job_runs.c.id).where(
            job_runs.c.id.in_(held_ids), job_runs.c.cancel_requested
        )
        cancel = frozenset((yield asked).scalars())
    return Renewal(held=held_ids, cancel_requested=cancel, registered=seen == 1)


def next_expiry_in(worker_id: str) -> Op[float | None]:
    """Seconds until the first lease held by another worker expires (by the database's
    clock), so a peer can reap a dead holder's lease right when it expires."""
    first, now = (
        yield sa.select(sa.func.min(job_locks.c.expires_at), db_now()).where(
            job_locks.c.worker_id.is_not(None), job_locks.c.worker_id != worker_id
        )
    ).one()
    return None if first is None else (first - now).total_seconds()


def list_locks() -> Op[list[LockRow]]:
    """Leases currently held (released rows are kept only to carry the fence forward)."""
    found = yield (
        sa.select(job_locks)
        .where(job_locks.c.worker_id.is_not(None))
        .order_by(job_locks.c.job_name, job_locks.c.slot)
    )
    rows = []
    for r in found:
        job, key = split_lock(r.job_name)
        rows.append(LockRow(**{**r._mapping, "job_name": job, "concurrency_key": key}))
    return rows
