"""Statements shared by the sync `Store` and the `AsyncClient`, written once.

Each operation here is a generator: it yields SQLAlchemy statements, receives each one's result
and returns the operation's value. `run_sync` drives it on a `Connection`, `run_async` on an
`AsyncConnection`, both inside the caller's transaction. So the SQL *and* the logic around it
(validation, the idempotency fallback, NOTIFY) exist in one place for both kinds of client.

"now" is always the database's clock (`db_now`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Generator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from jobrunner.errors import BadInput, InvalidArguments, JobNotFound, RunNotFound
from jobrunner.records import CatalogEntry, Run
from jobrunner.store.engine import db_now
from jobrunner.store.tables import KEYED, RUN_STATUSES, UTCDateTime, job_runs, jobrunner_jobs

if TYPE_CHECKING:  # importing sqlalchemy.ext.asyncio needs greenlet: only the async path does
    from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")
Step = sa.Executable | tuple[sa.Executable, Mapping[str, Any]]
Op = Generator[Step, sa.Result[Any], T]
"""An operation: yields statements (alone or with parameters), is sent each one's result,
returns its value."""

NOTIFY_CHANNEL = "jobrunner"


def run_sync(conn: sa.Connection, op: Op[T]) -> T:
    """Execute every statement of `op` on `conn`; returns the operation's value."""
    try:
        step = next(op)
        while True:
            step = op.send(conn.execute(*step) if isinstance(step, tuple) else conn.execute(step))
    except StopIteration as done:
        return cast(T, done.value)


async def run_async(conn: AsyncConnection, op: Op[T]) -> T:
    """Execute every statement of `op` on the async `conn`; returns the operation's value."""
    try:
        step = next(op)
        while True:
            result = await (conn.execute(*step) if isinstance(step, tuple) else conn.execute(step))
            step = op.send(result)
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
    """Queue a one-off run of a catalogued job (see `Store.enqueue` for the contract).

    One statement in the common case: the run is inserted from the job's catalog row (so an
    unknown job inserts nothing) and, on PostgreSQL, the NOTIFY rides in the same statement.
    Only when nothing was inserted does a second query tell an unknown job from a repeated
    idempotency key.
    """
    values = json_object(kwargs)
    if run_at is not None and run_at.tzinfo is None:
        raise BadInput(f"run_at must be timezone-aware, got naive {run_at.isoformat()}")
    params = {
        "name": job_name,
        "kwargs": values,
        "key": idempotency_key,
        "corr": correlation_id,
        "run_at": run_at,
    }
    query = _enqueue_statement(dialect, run_at is not None, idempotency_key is not None)
    row = (yield query, params).one_or_none()
    if row is not None:  # the run as inserted: what the database chose, and what was given
        got: tuple[Any, ...] = tuple(row)
        return Run(
            id=got[0],
            job_name=job_name,
            trigger="manual",
            scheduled_for=None,
            run_at=got[1],
            status="queued",
            reason=None,
            attempt=1,
            max_attempts=got[2],
            worker_id=None,
            fence=None,
            kwargs=values,
            enqueued_at=got[3],
            started_at=None,
            finished_at=None,
            error=None,
            cancel_requested=False,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            retry_of=None,
        )
    if idempotency_key is not None:  # the key was used before: return that run
        first = (
            yield sa.select(job_runs).where(
                job_runs.c.job_name == job_name, job_runs.c.idempotency_key == idempotency_key
            )
        ).one_or_none()
        if first is not None:
            return Run(**first._mapping)
    raise JobNotFound(f"no job named {job_name!r} in the catalog")


def enqueue_many(
    dialect: str,
    job_name: str,
    kwargs_list: Sequence[Mapping[str, Any] | None],
    *,
    run_at: datetime | None = None,
    correlation_id: str | None = None,
) -> Op[list[int]]:
    """Queue one run of a catalogued job per element of `kwargs_list`, in one statement;
    returns their ids in order. Every element is checked first (InvalidArguments names the
    first bad one); an unknown job is JobNotFound. No idempotency keys: use `enqueue`."""
    values = []
    for i, kwargs in enumerate(kwargs_list):
        try:
            values.append(json_object(kwargs))
        except InvalidArguments as exc:
            raise InvalidArguments(f"kwargs_list[{i}]: {exc}") from None
    if run_at is not None and run_at.tzinfo is None:
        raise BadInput(f"run_at must be timezone-aware, got naive {run_at.isoformat()}")
    if not values:
        return []
    params = {
        "name": job_name,
        "kwargs": json.dumps(values),
        "corr": correlation_id,
        "run_at": run_at,
    }
    ids = list((yield _enqueue_many_statement(dialect, run_at is not None), params).scalars())
    if not ids:
        raise JobNotFound(f"no job named {job_name!r} in the catalog")
    wake = notify(dialect, job_name)
    if wake is not None:
        yield wake
    return ids


def _runs_from_catalog(delayed: bool, kwargs: Any, key: Any, corr: Any) -> sa.Select[Any]:
    """SELECT of the columns `_ENQUEUE_COLUMNS` for a manual run of the job `:name` (from its
    catalog row: none for an unknown job), given the kwargs, key and correlation id."""
    retries = sa.func.coalesce(jobrunner_jobs.c.definition["retries"].as_integer(), 0)
    return sa.select(
        jobrunner_jobs.c.name,
        sa.literal("manual"),
        sa.bindparam("run_at", type_=UTCDateTime()) if delayed else db_now(),
        sa.literal("queued"),
        sa.literal(1),
        retries + 1,
        kwargs,
        db_now(),
        key,
        corr,
    ).where(jobrunner_jobs.c.name == sa.bindparam("name"))


_ENQUEUE_COLUMNS = [
    "job_name", "trigger", "run_at", "status", "attempt", "max_attempts", "kwargs",
    "enqueued_at", "idempotency_key", "correlation_id",
]  # fmt: skip


@functools.cache
def _enqueue_many_statement(dialect: str, delayed: bool) -> sa.Executable:
    """The bulk enqueue (parameters: name, kwargs as one JSON array text, corr, run_at): the
    array is expanded by the database (json_array_elements / json_each), one row each."""
    text = sa.bindparam("kwargs", type_=sa.String())
    if dialect == "postgresql":
        rows = sa.func.json_array_elements(sa.cast(text, sa.JSON())).table_valued("value")
    else:
        rows = sa.func.json_each(text).table_valued("value")
    source = _runs_from_catalog(
        delayed,
        rows.c.value,
        sa.null(),
        sa.bindparam("corr", type_=job_runs.c.correlation_id.type),
    ).select_from(jobrunner_jobs.join(rows, sa.true()))
    stmt: sa.Executable = (
        insert(dialect, job_runs).from_select(_ENQUEUE_COLUMNS, source).returning(job_runs.c.id)
    )
    return stmt


@functools.cache
def _enqueue_statement(dialect: str, delayed: bool, idempotent: bool) -> sa.Executable:
    """The enqueue statement, built once per shape (parameters: name, kwargs, key, corr,
    run_at): building it costs more than sending it."""
    source = _runs_from_catalog(
        delayed,
        sa.bindparam("kwargs", type_=job_runs.c.kwargs.type),
        sa.bindparam("key", type_=job_runs.c.idempotency_key.type),
        sa.bindparam("corr", type_=job_runs.c.correlation_id.type),
    )
    stmt = insert(dialect, job_runs).from_select(_ENQUEUE_COLUMNS, source)
    if idempotent:
        stmt = stmt.on_conflict_do_nothing(
            index_elements=["job_name", "idempotency_key"], index_where=KEYED
        )
    # Only what the database chose (`enqueue` has the rest): the 20 columns' descriptions
    # and values cost the client about as much as the rest of the call.
    chosen = [job_runs.c[k] for k in ("id", "run_at", "max_attempts", "enqueued_at")]
    returning: sa.Executable = stmt.returning(*chosen)
    if dialect != "postgresql":
        return returning
    # NOTIFY in the same statement, sent only if a row went in.
    queued = stmt.returning(*chosen, job_runs.c.job_name).cte("queued")
    return sa.select(
        *(queued.c[c.name] for c in chosen),
        sa.func.pg_notify(NOTIFY_CHANNEL, queued.c.job_name),
    )


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
