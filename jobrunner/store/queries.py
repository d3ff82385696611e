"""Statements shared by the sync `Store` and the `AsyncClient`, written once.

Each operation here is a generator: it yields SQLAlchemy statements, receives each one's result
and returns the operation's value. `run_sync` drives it on a `Connection`, `run_async` on an
`AsyncConnection`, both inside the caller's transaction. So the SQL *and* the logic around it
(validation, the idempotency fallback, NOTIFY) exist in one place for both kinds of client.

"now" is always the database's clock (`db_now`).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from jobrunner.errors import BadInput, InvalidArguments, JobNotFound, RunNotFound
from jobrunner.store.engine import db_now
from jobrunner.store.records import CatalogEntry, Run
from jobrunner.store.tables import RUN_STATUSES, job_runs, jobrunner_jobs

if TYPE_CHECKING:  # importing sqlalchemy.ext.asyncio needs greenlet: only the async path does
    from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")
Op = Generator[sa.Executable, sa.Result[Any], T]
"""An operation: yields statements, is sent each one's result, returns its value."""

NOTIFY_CHANNEL = "jobrunner"


def run_sync(conn: sa.Connection, op: Op[T]) -> T:
    """Execute every statement of `op` on `conn`; returns the operation's value."""
    try:
        stmt = next(op)
        while True:
            stmt = op.send(conn.execute(stmt))
    except StopIteration as done:
        return cast(T, done.value)


async def run_async(conn: AsyncConnection, op: Op[T]) -> T:
    """Execute every statement of `op` on the async `conn`; returns the operation's value."""
    try:
        stmt = next(op)
        while True:
            stmt = op.send(await conn.execute(stmt))
    except StopIteration as done:
        return cast(T, done.value)


# -- builders ---------------------------------------------------------------------------


def insert(dialect: str, table: sa.Table) -> Any:
    """The dialect's INSERT (with ON CONFLICT support) for `table`."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def notify(dialect: str, payload: str) -> sa.Select[Any] | None:
    """`pg_notify` waking listening workers, on PostgreSQL; None elsewhere."""
    if dialect != "postgresql":
        return None
    return sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, payload))


def select_runs(
    *,
    job: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    correlation_id: str | None = None,
    limit: int = 50,
) -> sa.Select[Any]:
    """Runs newest first, filtered (`since` compares `enqueued_at`)."""
    if status is not None and status not in RUN_STATUSES:
        raise BadInput(f"unknown status {status!r}: allowed {', '.join(RUN_STATUSES)}")
    query = sa.select(job_runs).order_by(job_runs.c.id.desc()).limit(limit)
    if job is not None:
        query = query.where(job_runs.c.job_name == job)
    if status is not None:
        query = query.where(job_runs.c.status == status)
    if since is not None:
        query = query.where(job_runs.c.enqueued_at >= since)
    if correlation_id is not None:
        query = query.where(job_runs.c.correlation_id == correlation_id)
    return query


def json_object(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """`kwargs` as a plain JSON object, or InvalidArguments."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidArguments("kwargs must be a JSON object (a mapping with string keys)")
    try:
        decoded: dict[str, Any] = json.loads(json.dumps(dict(kwargs), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidArguments(f"kwargs are not JSON-serialisable: {exc}") from None
    return decoded


# -- operations -------------------------------------------------------------------------


def enqueue(
    dialect: str,
    job_name: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
    correlation_id: str | None = None,
) -> Op[Run]:
    """Queue a one-off run of a catalogued job (see `Store.enqueue` for the contract)."""
    values = json_object(kwargs)
    if run_at is not None and run_at.tzinfo is None:
        raise BadInput(f"run_at must be timezone-aware, got naive {run_at.isoformat()}")
    job = (
        yield sa.select(jobrunner_jobs.c.definition).where(jobrunner_jobs.c.name == job_name)
    ).one_or_none()
    if job is None:
        raise JobNotFound(f"no job named {job_name!r} in the catalog")
    retries = int(job.definition.get("retries", 0))
    stmt = insert(dialect, job_runs).values(
        job_name=job_name,
        trigger="manual",
        run_at=run_at if run_at is not None else db_now(),
        status="queued",
        attempt=1,
        max_attempts=retries + 1,
        kwargs=values,
        enqueued_at=db_now(),
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
    )
    if idempotency_key is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["job_name", "idempotency_key"])
    row = (yield stmt.returning(*job_runs.c)).one_or_none()
    if row is None:  # the idempotency key was used before: return that run
        row = (
            yield sa.select(job_runs).where(
                job_runs.c.job_name == job_name, job_runs.c.idempotency_key == idempotency_key
            )
        ).one()
    else:
        wake = notify(dialect, job_name)
        if wake is not None:
            yield wake
    return Run(**row._mapping)


def get_run(run_id: int) -> Op[Run]:
    row = (yield sa.select(job_runs).where(job_runs.c.id == run_id)).one_or_none()
    if row is None:
        raise RunNotFound(f"no run with id {run_id}")
    return Run(**row._mapping)


def list_runs(
    *,
    job: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    correlation_id: str | None = None,
    limit: int = 50,
) -> Op[list[Run]]:
    query = select_runs(
        job=job, status=status, since=since, correlation_id=correlation_id, limit=limit
    )
    return [Run(**r._mapping) for r in (yield query)]


def list_jobs() -> Op[list[CatalogEntry]]:
    rows = yield sa.select(jobrunner_jobs).order_by(jobrunner_jobs.c.name)
    return [CatalogEntry(**r._mapping) for r in rows]


def get_job(name: str) -> Op[CatalogEntry]:
    row = (yield sa.select(jobrunner_jobs).where(jobrunner_jobs.c.name == name)).one_or_none()
    if row is None:
        raise JobNotFound(f"no job named {name!r} in the catalog")
    return CatalogEntry(**row._mapping)


def cancel_run(run_id: int) -> Op[Run]:
    """A queued run is recorded `cancelled` at once; a running run is flagged
    (`cancel_requested`) so its worker cancels it at its next heartbeat. Finished runs are
    unchanged. Returns the run as it is now (RunNotFound if there is none)."""
    yield (
        job_runs.update()
        .where(job_runs.c.id == run_id, job_runs.c.status == "queued")
        .values(status="cancelled", reason="cancelled by request", finished_at=db_now())
    )
    yield (
        job_runs.update()
        .where(job_runs.c.id == run_id, job_runs.c.status == "running")
        .values(cancel_requested=True)
    )
    return (yield from get_run(run_id))
