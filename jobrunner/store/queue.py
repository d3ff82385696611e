"""Queued runs: enqueue (one or many), wake-ups, retries, cancel, the queue's depth.

Enqueue inserts the run from the job's catalog row, so an unknown job inserts nothing and
nothing a caller sends is imported or evaluated: only a JSON object of kwargs is stored.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypedDict, Unpack

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from jobrunner.converters import (
    check_job_name,
    check_priority,
    check_text,
    check_traceparent,
    json_object,
)
from jobrunner.errors import BadInput, InvalidArguments, JobNotFound
from jobrunner.jobconfig import DEFAULT_QUEUE, key_text
from jobrunner.records import Run
from jobrunner.store.direct import Direct
from jobrunner.store.engine import db_now
from jobrunner.store.history import check_run_id, get_run
from jobrunner.store.params import Signatures
from jobrunner.store.sql import Op, insert
from jobrunner.store.tables import KEYED, SCHEDULED, SLOT_KEY, UTCDateTime, job_runs, jobrunner_jobs
from jobrunner.store.unique import find_unique, kwargs_digest

NOTIFY_CHANNEL = "jobrunner"  # wakes workers: runs were queued or leases released
DONE_CHANNEL = "jobrunner_done"  # wakes `Client.wait`: runs ended


class RunOptions(TypedDict, total=False):
    """What `enqueue` and `enqueue_many` take for every run (the one definition of these)."""

    run_at: datetime | None  # timezone-aware: not before then (default: now)
    correlation_id: str | None  # default: the one bound in the caller's context
    priority: int | None  # higher first (default: the job's `priority`, else 0)
    # the run's concurrency key value (default: its kwarg named by the job's concurrency_key)
    concurrency_key: str | None
    # W3C traceparent of the span enqueuing it, parent of the run's span (default, with the
    # `otel` extra: the caller's current span)
    traceparent: str | None


class BulkOptions(RunOptions, total=False):
    """What `enqueue_many` takes besides the kwargs."""

    # one per element (None: none): a repeated key (per job) returns the run it first created
    idempotency_keys: Sequence[str | None] | None


class EnqueueOptions(RunOptions, total=False):
    """What `enqueue` takes besides the job's name and kwargs."""

    idempotency_key: str | None  # per job: a repeat returns the run the first call created


def check_options(options: Mapping[str, Any], allowed: type[Mapping[str, Any]], call: str) -> None:
    """Refuse a keyword the call does not know, naming the allowed ones (a TypeError, as
    Python's own for a misspelt keyword)."""
    names = list(allowed.__annotations__)
    for key in options:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TypeError(
                f"{call}() got an unexpected keyword argument {key!r}: {hint}"
                f"allowed: {', '.join(names)}"
            )


def wake(dialect: str, payload: str, channel: str = NOTIFY_CHANNEL) -> Op[None]:
    """Wake listeners of `channel` (a no-op on SQLite, where everyone polls)."""
    if dialect == "postgresql":
        yield sa.select(sa.func.pg_notify(channel, payload))


def check_run_options(job_name: str, options: RunOptions) -> None:
    """What every enqueue refuses before a statement: a name no job can have (JobNotFound),
    a naive run_at (BadInput), and an option out of its range (InvalidArguments)."""
    check_job_name(job_name)
    run_at = options.get("run_at")
    if run_at is not None and run_at.tzinfo is None:
        raise BadInput(f"run_at must be timezone-aware, got naive {run_at.isoformat()}")
    check_priority(options.get("priority"))
    check_text("concurrency_key", options.get("concurrency_key"))
    check_text("correlation_id", options.get("correlation_id"))
    check_traceparent(options.get("traceparent"))


def enqueue(
    dialect: str,
    job_name: str,
    kwargs: Mapping[str, Any] | None,
    signatures: Signatures | None = None,
    **options: Unpack[EnqueueOptions],
) -> Op[Run]:
    """Queue a one-off run of a catalogued job (`EnqueueOptions`); returns the run.

    Refuses a job missing from the catalog (JobNotFound) and kwargs that are not a JSON
    object (InvalidArguments). With an idempotency key, a repeat returns the first run.
    One statement in the common case: the run is inserted from the job's catalog row and,
    on PostgreSQL, the NOTIFY rides in the same statement. Only when nothing was inserted
    does a second query tell an unknown job from a repeated idempotency key. A job with
    `unique_for` (known from `signatures`) returns the newest run with equal kwargs enqueued
    within the window, if there is one (see `find_unique`).
    """
    check_options(options, EnqueueOptions, "enqueue")
    check_run_options(job_name, options)
    check_text("idempotency_key", options.get("idempotency_key"))
    values = json_object(kwargs)
    unique = None
    if signatures is not None:
        unique = yield from signatures.check(job_name, [values])
    run_at, key = options.get("run_at"), options.get("idempotency_key")
    corr, priority = options.get("correlation_id"), options.get("priority")
    ckey = options.get("concurrency_key")
    digest = None
    if unique is not None and key is None:
        digest = kwargs_digest(values)
        existing = yield from find_unique(dialect, job_name, digest, unique)
        if existing is not None:
            return existing
    params: dict[str, Any] = {"name": job_name, "kwargs": values, "key": key, "corr": corr}
    params.update(run_at=run_at, priority=priority, ckey=ckey, digest=digest)
    params["tp"] = options.get("traceparent")
    query = _enqueue_statement(dialect, run_at is not None, key is not None)
    row = (yield query, params).one_or_none()
    if row is not None:  # the run as inserted: what the database chose, and what was given
        return _queued(params, tuple(row))
    if key is not None:  # the key was used before: return that run
        first = (
            yield sa.select(job_runs).where(
                job_runs.c.job_name == job_name, job_runs.c.idempotency_key == key
            )
        ).one_or_none()
        if first is not None:
            return Run(**first._mapping)
    yield from _refused(job_name, [values], ckey)
    raise AssertionError("unreachable: _refused raises")


def _refused(job_name: str, kwargs_list: Sequence[Mapping[str, Any]], ckey: str | None) -> Op[None]:
    """Why an enqueue inserted nothing (or fewer runs than asked): the job is not in the
    catalog (JobNotFound), or its concurrency key does not fit (InvalidArguments)."""
    found = (
        yield sa.select(jobrunner_jobs.c.definition).where(jobrunner_jobs.c.name == job_name)
    ).scalar_one_or_none()
    if found is None:
        raise JobNotFound(f"no job named {job_name!r} in the catalog")
    kwarg = found.get("concurrency_key")
    if kwarg is None:
        raise InvalidArguments(
            f"job {job_name!r} has no concurrency_key, so a run cannot be given one: "
            f"leave concurrency_key out, or set concurrency_key and max_per_key on the job"
        )
    missing = next(i for i, kw in enumerate(kwargs_list) if key_text(kw.get(kwarg)) is None)
    where = f"kwargs_list[{missing}]: " if len(kwargs_list) > 1 else ""
    raise InvalidArguments(
        f"{where}job {job_name!r} limits its runs per value of the kwarg {kwarg!r} "
        f"(concurrency_key): kwargs must hold {kwarg!r} (not null), or pass "
        "concurrency_key=... to the enqueue"
    )


def _queued(given: Mapping[str, Any], got: tuple[Any, ...]) -> Run:
    """The run an enqueue inserted, from the parameters it `given` and what the database
    chose (`got`: id, run_at, max_attempts, enqueued_at, priority, concurrency_key)."""
    return Run(
        id=got[0],
        job_name=given["name"],
        trigger="manual",
        scheduled_for=None,
        run_at=got[1],
        status="queued",
        reason=None,
        attempt=1,
        max_attempts=got[2],
        worker_id=None,
        fence=None,
        kwargs=given["kwargs"],
        enqueued_at=got[3],
        started_at=None,
        finished_at=None,
        error=None,
        cancel_requested=False,
        idempotency_key=given["key"],
        correlation_id=given["corr"],
        retry_of=None,
        priority=got[4],
        concurrency_key=got[5],
        traceparent=given["tp"],
    )


def enqueue_many(
    dialect: str,
    job_name: str,
    kwargs_list: Sequence[Mapping[str, Any] | None],
    signatures: Signatures | None = None,
    **options: Unpack[BulkOptions],
) -> Op[list[int]]:
    """Queue one run of a catalogued job per element of `kwargs_list` (`BulkOptions`), in
    one statement; returns their ids in order. Every element is checked first
    (InvalidArguments names the first bad one); an unknown job is JobNotFound."""
    check_options(options, BulkOptions, "enqueue_many")
    check_run_options(job_name, options)
    values = [json_object(kwargs, f"kwargs_list[{i}]") for i, kwargs in enumerate(kwargs_list)]
    unique = None
    if signatures is not None:
        unique = yield from signatures.check(job_name, values)
    run_at, ckey = options.get("run_at"), options.get("concurrency_key")
    keys = options.get("idempotency_keys")
    if keys is not None or unique is not None:  # element by element: each may be a repeat
        keys = _checked_keys(keys, values) if keys is not None else [None] * len(values)
        return (yield from _enqueue_each(dialect, job_name, values, keys, options, signatures))
    if not values:
        return []
    params = {
        "name": job_name,
        "kwargs": json.dumps(values),
        "corr": options.get("correlation_id"),
        "run_at": run_at,
        "priority": options.get("priority"),
        "ckey": ckey,
        "tp": options.get("traceparent"),
    }
    ids = list((yield _enqueue_many_statement(dialect, run_at is not None), params).scalars())
    if len(ids) < len(values):  # the caller's transaction is rolled back: nothing written
        yield from _refused(job_name, values, ckey)
    yield from wake(dialect, job_name)
    return ids


def _checked_keys(keys: object, values: Sequence[object]) -> list[str | None]:
    """`idempotency_keys`: one per element, each a string of 1 to 200 characters or None."""
    if isinstance(keys, str | bytes) or not isinstance(keys, Sequence) or len(keys) != len(values):
        raise InvalidArguments(
            f"idempotency_keys must be a list with one key (or None) per element of "
            f"kwargs_list ({len(values)}), got {keys!r:.80}"
        )
    for i, key in enumerate(keys):
        check_text(f"idempotency_keys[{i}]", key)
    return list(keys)


def _enqueue_each(
    dialect: str,
    job_name: str,
    values: list[dict[str, Any]],
    keys: list[str | None],
    options: Mapping[str, Any],
    signatures: Signatures | None,
) -> Op[list[int]]:
    """`enqueue_many` with idempotency keys: one idempotent enqueue per element, in the same
    transaction (all or none); a repeated key gives the id of the run it first created."""
    given = {k: v for k, v in options.items() if k != "idempotency_keys"}
    ids = []
    for i, (kwargs, key) in enumerate(zip(values, keys, strict=True)):
        try:
            run = yield from enqueue(
                dialect, job_name, kwargs, signatures, idempotency_key=key, **given
            )
        except InvalidArguments as exc:
            raise InvalidArguments(f"kwargs_list[{i}]: {exc}") from None
        ids.append(run.id)
    return ids


def _concurrency_key(dialect: str, kwargs: Any) -> tuple[Any, sa.ColumnElement[bool]]:
    """The run's concurrency key (`:ckey`, else the kwarg its job's `concurrency_key`
    names, as text), and the condition that it fits the job: none for a job without a key,
    one for a job with a key."""
    name = jobrunner_jobs.c.definition["concurrency_key"].as_string()
    given = sa.bindparam("ckey", type_=sa.String())
    found: sa.ColumnElement[Any]
    if dialect == "postgresql":
        found = sa.func.json_extract_path_text(sa.cast(kwargs, postgresql.JSON()), name)
    else:
        found = sa.cast(sa.func.json_extract(kwargs, '$."' + name + '"'), sa.String())
    key = sa.case((name.is_(None), sa.null()), else_=sa.func.coalesce(given, found))
    fits = sa.or_(
        sa.and_(name.is_(None), given.is_(None)), sa.and_(name.is_not(None), key.is_not(None))
    )
    return key, fits


def _runs_from_catalog(
    dialect: str, delayed: bool, kwargs: Any, key: Any, corr: Any, digest: Any
) -> sa.Select[Any]:
    """SELECT of the columns `_ENQUEUE_COLUMNS` for a manual run of the job `:name` (from its
    catalog row: none for an unknown job, or a concurrency key that does not fit), given the
    kwargs, idempotency key and correlation id (and the traceparent `:tp`)."""
    retries = sa.func.coalesce(jobrunner_jobs.c.definition["retries"].as_integer(), 0)
    priority = sa.func.coalesce(
        sa.bindparam("priority", type_=sa.Integer()),
        jobrunner_jobs.c.definition["priority"].as_integer(),
        0,
    )
    ckey, fits = _concurrency_key(dialect, kwargs)
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
        priority,
        ckey,
        digest,
        sa.bindparam("tp", type_=job_runs.c.traceparent.type),
    ).where(jobrunner_jobs.c.name == sa.bindparam("name"), fits)


_ENQUEUE_COLUMNS = [
    "job_name", "trigger", "run_at", "status", "attempt", "max_attempts", "kwargs",
    "enqueued_at", "idempotency_key", "correlation_id", "priority", "concurrency_key",
    "unique_digest", "traceparent",
]  # fmt: skip


@functools.cache
def _enqueue_many_statement(dialect: str, delayed: bool) -> sa.Executable:
    """The bulk enqueue (parameters: name, kwargs as one JSON array text, corr, run_at): the
    array is expanded by the database (json_array_elements / json_each), one row each."""
    text = sa.bindparam("kwargs", type_=sa.String())
    if dialect == "postgresql":
        elements = sa.func.json_array_elements(sa.cast(text, sa.JSON())).table_valued("value")
    else:
        elements = sa.func.json_each(text).table_valued("value")
    source = _runs_from_catalog(
        dialect,
        delayed,
        elements.c.value,
        sa.null(),
        sa.bindparam("corr", type_=job_runs.c.correlation_id.type),
        sa.null(),
    ).select_from(jobrunner_jobs.join(elements, sa.true()))
    stmt: sa.Executable = (
        insert(dialect, job_runs).from_select(_ENQUEUE_COLUMNS, source).returning(job_runs.c.id)
    )
    return stmt


@functools.cache
def _enqueue_statement(dialect: str, delayed: bool, idempotent: bool) -> sa.Executable | Direct:
    """The enqueue statement, built once per shape (parameters: name, kwargs, key, corr,
    run_at): building it costs more than sending it."""
    source = _runs_from_catalog(
        dialect,
        delayed,
        sa.bindparam("kwargs", type_=job_runs.c.kwargs.type),
        sa.bindparam("key", type_=job_runs.c.idempotency_key.type),
        sa.bindparam("corr", type_=job_runs.c.correlation_id.type),
        sa.bindparam("digest", type_=sa.String()),
    )
    stmt = insert(dialect, job_runs).from_select(_ENQUEUE_COLUMNS, source)
    if idempotent:
        stmt = stmt.on_conflict_do_nothing(
            index_elements=["job_name", "idempotency_key"], index_where=KEYED
        )
    # Only what the database chose (`enqueue` has the rest): the 20 columns' descriptions
    # and values cost the client about as much as the rest of the call.
    chosen = [
        job_runs.c[k]
        for k in ("id", "run_at", "max_attempts", "enqueued_at", "priority", "concurrency_key")
    ]
    returning: sa.Executable = stmt.returning(*chosen)
    if dialect != "postgresql":
        return returning
    # NOTIFY in the same statement, sent only if a row went in; on the driver's cursor: the
    # hottest call a client makes (see `jobrunner.store.direct`).
    queued = stmt.returning(*chosen, job_runs.c.job_name).cte("queued")
    return Direct(
        sa.select(
            *(queued.c[c.name] for c in chosen),
            sa.func.pg_notify(NOTIFY_CHANNEL, queued.c.job_name),
        )
    )


def queue_retries(
    dialect: str, delays: Mapping[int, float], links: Mapping[int, str | None] | None = None
) -> Op[None]:
    """Queue attempt + 1 of each run in `delays` (run id -> seconds from now) that has
    attempts left, copying its job, slot, kwargs and the rest of `COPIED` (idempotent per
    slot), with its `links` entry (the traceparent of the attempt's span) as `trace_link`,
    and wake listening workers: a retry may be due now."""
    if not delays:
        return
    links = links or {}
    params = [{"rid": rid, "delay": d, "link": links.get(rid)} for rid, d in delays.items()]
    yield _retry_statement(dialect), params
    yield from wake(dialect, "retry")


# What a run's next attempt (a retry, a re-drive) copies from it as it is.
COPIED = (
    "job_name", "scheduled_for", "kwargs", "correlation_id", "priority", "concurrency_key",
    "schedule_key", "schedule_version", "overlap", "traceparent",
)  # fmt: skip


def next_attempt(**computed: Any) -> tuple[list[str], list[Any]]:
    """The columns of a run's next attempt and their values: those of `COPIED` from the run
    (`job_runs`) that `computed` does not give, then `computed`'s."""
    copied = [c for c in COPIED if c not in computed]
    return [*copied, *computed], [*(job_runs.c[c] for c in copied), *computed.values()]


@functools.cache
def _retry_statement(dialect: str) -> Any:
    link = sa.bindparam("link", type_=job_runs.c.trace_link.type)
    columns, values = next_attempt(
        trigger=sa.literal("retry"),
        run_at=db_now(sa.bindparam("delay", type_=sa.Float())),
        status=sa.literal("queued"),
        attempt=job_runs.c.attempt + 1,
        max_attempts=job_runs.c.max_attempts,
        enqueued_at=db_now(),
        retry_of=job_runs.c.id,
        trace_link=link,
        # a run nobody's span enqueued: its attempts are one trace, each the child of the last
        traceparent=sa.func.coalesce(job_runs.c.traceparent, link),
    )
    source = sa.select(*values).where(
        job_runs.c.id == sa.bindparam("rid"), job_runs.c.attempt < job_runs.c.max_attempts
    )
    return (
        insert(dialect, job_runs)
        .from_select(columns, source)
        .on_conflict_do_nothing(index_elements=SLOT_KEY, index_where=SCHEDULED)
    )


def cancel_run(dialect: str, run_id: int) -> Op[Run]:
    """A queued run is recorded `cancelled` at once; a running run is flagged
    (`cancel_requested`) so its worker cancels it at its next heartbeat. Finished runs are
    unchanged. Returns the run as it is now (RunNotFound if there is none)."""
    check_run_id(run_id)
    cancelled = (
        yield job_runs.update()
        .where(job_runs.c.id == run_id, job_runs.c.status == "queued")
        .values(status="cancelled", reason="cancelled by request", finished_at=db_now())
    ).rowcount
    if cancelled:
        yield from wake(dialect, "", DONE_CHANNEL)
    yield (
        job_runs.update()
        .where(job_runs.c.id == run_id, job_runs.c.status == "running")
        .values(cancel_requested=True)
    )
    return (yield from get_run(run_id))


PRIORITY_CLASSES = {1: "above 0", 0: "0", -1: "below 0"}


def queue_depth() -> Op[dict[tuple[str, str], int]]:
    """Queued runs that are due now, by their job's queue (a job no longer in the catalog
    counts as "default") and priority class (`PRIORITY_CLASSES`: above 0, 0, below 0)."""
    queue = sa.func.coalesce(jobrunner_jobs.c.definition["queue"].as_string(), DEFAULT_QUEUE)
    sign = sa.case((job_runs.c.priority > 0, 1), (job_runs.c.priority < 0, -1), else_=0)
    joined = job_runs.outerjoin(jobrunner_jobs, jobrunner_jobs.c.name == job_runs.c.job_name)
    count = (
        sa.select(queue, sign, sa.func.count())
        .select_from(joined)
        .where(job_runs.c.status == "queued", job_runs.c.run_at <= db_now())
        .group_by(queue, sign)
    )
    return {(str(q), PRIORITY_CLASSES[int(p)]): int(n) for q, p, n in (yield count)}
