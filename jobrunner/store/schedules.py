"""Runtime schedules (`jobrunner_schedules`): created, changed and listed by clients, and
planned by any replica when due.

A client's change (update, pause, resume, delete) takes effect at the schedule's next slot
not yet claimed: in the same transaction it withdraws the slots recorded ahead of their time
that no worker claimed yet, and moves the cursor back to now so that the planner records
them again under the new version. The planner claims the schedules due within its horizon
(`FOR UPDATE SKIP LOCKED`: replicas share them), records their slots through the slot
ledger (the unique slot key keeps one start per slot whatever happens) and moves each
cursor and next fire time on, all in one transaction.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from jobrunner.converters import check_text
from jobrunner.errors import InvalidArguments, ScheduleExists, ScheduleNotFound
from jobrunner.records import ScheduleRow, Slot
from jobrunner.runtime import (
    MAX_SCHEDULES_LIST,
    backfill_slots,
    check_changes,
    check_concurrency_key,
    check_key,
    next_fire,
)
from jobrunner.schedule import Schedule
from jobrunner.store.catalog import clock, get_job
from jobrunner.store.engine import db_now
from jobrunner.store.params import Signatures
from jobrunner.store.slots import insert_slots
from jobrunner.store.sql import Op, any_of, insert, json_text, unnest
from jobrunner.store.sql import given as given_values
from jobrunner.store.sql import rows as rows_of
from jobrunner.store.tables import UTCDateTime, job_runs, jobrunner_schedules

LIVE = ("active", "paused")  # the others (deleted, retired) plan nothing
_T = jobrunner_schedules.c
Planner = Callable[[ScheduleRow], tuple[list[Slot], datetime]]  # its slots, its next fire


def _named(job: str, key: str) -> sa.ColumnElement[bool]:
    return (_T.job_name == job) & (_T.key == key)


def get_schedule(job: str, key: str) -> Op[ScheduleRow]:
    """One schedule, whatever its status (ScheduleNotFound if there is none)."""
    check_key(job, key)
    row = (yield sa.select(jobrunner_schedules).where(_named(job, key))).one_or_none()
    if row is None:
        raise ScheduleNotFound(f"job {job!r} has no schedule with the key {key!r}")
    return ScheduleRow(**row._mapping)


def list_schedules(
    job: str | None = None, *, ended: bool = False, limit: int = MAX_SCHEDULES_LIST
) -> Op[list[ScheduleRow]]:
    """Schedules by job and key, at most `limit`: the live ones (active, paused), with
    `ended` also those deleted or retired."""
    check_text("the job filter", job, least=0)
    query = sa.select(jobrunner_schedules).order_by(_T.job_name, _T.key).limit(limit)
    if job is not None:
        query = query.where(_T.job_name == job)
    if not ended:
        query = query.where(_T.status.in_(LIVE))
    return [ScheduleRow(**r._mapping) for r in (yield query)]


def create_schedule(
    dialect: str,
    job: str,
    key: str,
    changes: Mapping[str, Any],
    signatures: Signatures | None = None,
) -> Op[ScheduleRow]:
    """A new schedule of the catalogued `job` (JobNotFound), its settings checked as the
    config's and its kwargs as an enqueue's (InvalidArguments); its slots begin after now.
    A key in use by a live schedule is refused; a deleted or retired one is reused (its
    version goes on)."""
    key = check_key(job, key)
    given = check_changes(job, key, changes)
    if "cron" not in given:
        raise InvalidArguments(f"schedule {key!r} of job {job!r}: a cron is required")
    entry = yield from get_job(job)
    kwargs = given.get("kwargs") or {}
    check_concurrency_key(entry, key, kwargs)
    if signatures is not None:
        yield from signatures.check(job, [kwargs])
    now = yield from clock()
    values = {
        "cron": given["cron"],
        "timezone": given.get("timezone"),
        "kwargs": kwargs,
        "catch_up": given.get("catch_up"),
        "overlap": given.get("overlap"),
        "status": "active",
        "status_note": None,
        "cursor": now,
        "next_fire_at": next_fire(given["cron"], given.get("timezone") or entry.timezone, now),
        "updated_at": now,
    }
    old = (yield sa.select(_T.status, _T.version).where(_named(job, key)).with_for_update()).first()
    if old is not None and old.status in LIVE:
        raise ScheduleExists(
            f"job {job!r} has a schedule with the key {key!r} already: change it with "
            "update_schedule, or delete it first"
        )
    if old is not None:
        yield (
            jobrunner_schedules.update()
            .where(_named(job, key))
            .values(version=old.version + 1, **values)
        )
    else:
        added = yield (
            insert(dialect, jobrunner_schedules)
            .values(job_name=job, key=key, version=1, created_at=now, **values)
            .on_conflict_do_nothing(index_elements=["job_name", "key"])
        )
        if added.rowcount == 0:  # a racing create of the same key won
            raise ScheduleExists(f"job {job!r} has a schedule with the key {key!r} already")
    return (yield from get_schedule(job, key))


def create_schedules(
    dialect: str,
    job: str,
    specs: Sequence[Mapping[str, Any]],
    signatures: Signatures | None = None,
) -> Op[int]:
    """Many schedules of `job` at once, all or none: each spec has a `key`, a `cron` and the
    settings of `create_schedule`; one statement on PostgreSQL. A key of a deleted or retired
    schedule is reused; a live one is refused (ScheduleExists). Returns how many were made."""
    checked = [_spec(job, i, spec) for i, spec in enumerate(specs)]
    keys = [key for key, _ in checked]
    if len(set(keys)) < len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise InvalidArguments(f"schedules of job {job!r}: the key {twice!r} is given twice")
    entry = yield from get_job(job)
    for key, given in checked:
        check_concurrency_key(entry, key, given.get("kwargs") or {})
    if signatures is not None and checked:
        yield from signatures.check(job, [given.get("kwargs") or {} for _, given in checked])
    if not checked:
        return 0
    now = yield from clock()
    values = [
        {
            "k": key,
            "c": given["cron"],
            "tz": given.get("timezone"),
            "kw": json.dumps(given.get("kwargs") or {}, separators=(",", ":")),
            "cu": given.get("catch_up"),
            "ov": given.get("overlap"),
            "n": next_fire(given["cron"], given.get("timezone") or entry.timezone, now),
        }
        for key, given in checked
    ]
    made = (yield _bulk_statement(dialect), rows_of(dialect, values, job=job, now=now)).all()
    if len(made) < len(values):
        taken = sorted(set(keys) - {r[0] for r in made})
        raise ScheduleExists(
            f"job {job!r} has live schedules with {len(taken)} of these keys already "
            f"(the first: {taken[0]!r}): nothing was created"
        )
    return len(made)


def _spec(job: str, i: int, spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if not isinstance(spec, Mapping) or "key" not in spec or "cron" not in spec:
        raise InvalidArguments(
            f"schedules[{i}] of job {job!r}: expected a mapping with a 'key' and a 'cron', "
            f"got {spec!r:.80}"
        )
    settings = {k: v for k, v in spec.items() if k != "key"}
    key = check_key(job, spec["key"])
    return key, check_changes(job, key, settings)


@functools.cache
def _bulk_statement(dialect: str) -> Any:
    """Insert schedules given as `k` (key), `c` (cron), `tz`, `kw` (kwargs as JSON text),
    `cu` (catch-up), `ov` (overlap), `n` (next fire) of `:job` at `:now`; a conflicting key
    is taken over only if its schedule has ended. RETURNING the keys written."""
    kinds: dict[str, Any] = {"k": sa.String(), "c": sa.String(), "tz": sa.String(), "kw": sa.Text(),
             "cu": sa.String(), "ov": sa.String(), "n": UTCDateTime()}  # fmt: skip
    given = given_values(dialect, kinds)
    now = sa.bindparam("now", type_=UTCDateTime())
    values = {
        "job_name": sa.bindparam("job", type_=sa.String()),
        "key": given["k"],
        "cron": given["c"],
        "timezone": given["tz"],
        "kwargs": json_text(dialect, given["kw"]),
        "catch_up": given["cu"],
        "overlap": given["ov"],
        "status": sa.literal("active"),
        "version": sa.literal(1),
        "cursor": now,
        "next_fire_at": given["n"],
        "created_at": now,
        "updated_at": now,
    }
    insert_ = insert(dialect, jobrunner_schedules)
    stmt = (
        insert_.from_select(list(values), sa.select(*values.values()))
        if dialect == "postgresql"
        else insert_.values(values)
    )
    taken = {c: stmt.excluded[c] for c in ("cron", "timezone", "kwargs", "catch_up", "overlap")}
    taken.update(
        {c: stmt.excluded[c] for c in ("status", "cursor", "next_fire_at", "updated_at")},
        status_note=sa.null(),
        version=_T.version + 1,
    )
    return stmt.on_conflict_do_update(
        index_elements=["job_name", "key"],
        set_=taken,
        where=sa.and_(*(_T.status != status for status in LIVE)),  # no list: executemany
    ).returning(_T.key)


def update_schedule(
    dialect: str,
    job: str,
    key: str,
    changes: Mapping[str, Any],
    signatures: Signatures | None = None,
) -> Op[ScheduleRow]:
    """Change a live schedule's cron, zone, kwargs, catch-up or overlap (None: back to the
    job's); its version grows and its next slot not yet claimed follows the change."""
    given = check_changes(job, check_key(job, key), changes)
    if not given:
        raise InvalidArguments(
            f"schedule {key!r} of job {job!r}: nothing to change; "
            "allowed: cron, timezone, kwargs, catch_up, overlap"
        )
    row = yield from _live(job, key)
    if "kwargs" in given:
        check_concurrency_key((yield from get_job(job)), key, given["kwargs"])
        if signatures is not None:
            yield from signatures.check(job, [given["kwargs"]])
    return (yield from _change(dialect, row, given))


def set_schedule_paused(dialect: str, job: str, key: str, paused: bool) -> Op[ScheduleRow]:
    """Pause (its slots are recorded skipped, reason `paused`) or resume a live schedule."""
    row = yield from _live(job, key)
    status = "paused" if paused else "active"
    if row.status == status:
        return row
    return (yield from _change(dialect, row, {"status": status}))


def delete_schedule(dialect: str, job: str, key: str) -> Op[ScheduleRow]:
    """End a live schedule: its slots not yet claimed are withdrawn and no more are
    planned. The row stays (status `deleted`) so that `why` and `list --all` show it."""
    row = yield from _live(job, key)
    return (
        yield from _change(
            dialect, row, {"status": "deleted", "status_note": "deleted by a client"}, end=True
        )
    )


def _live(job: str, key: str) -> Op[ScheduleRow]:
    check_key(job, key)
    row = (
        yield sa.select(jobrunner_schedules).where(_named(job, key)).with_for_update()
    ).one_or_none()
    if row is None or row.status not in LIVE:
        said = "" if row is None else f" (it was {row.status})"
        raise ScheduleNotFound(f"job {job!r} has no live schedule with the key {key!r}{said}")
    return ScheduleRow(**row._mapping)


def _change(
    dialect: str, row: ScheduleRow, values: Mapping[str, Any], *, end: bool = False
) -> Op[ScheduleRow]:
    """Write a change as the next version: withdraw the slots recorded ahead that no worker
    claimed, plan again from now (or, with `end`, plan nothing more). A pause records the
    schedule's due slots that wait unclaimed `skipped` (paused); an end cancels every run
    of it still queued."""
    now = yield from _clock_now(dialect)  # after the row's lock: a planner may have held it
    yield from withdraw_ahead(row.job_name, row.key, now)
    if end or values.get("status") == "paused":
        yield from _settle_due(row.job_name, row.key, now, end=end)
    cursor = min(row.cursor, now)
    merged = {**row.__dict__, **values}
    if end:
        next_at = None
    else:
        zone = merged["timezone"] or (yield from get_job(row.job_name)).timezone
        next_at = next_fire(merged["cron"], zone, cursor)
    yield (
        jobrunner_schedules.update()
        .where(_named(row.job_name, row.key))
        .values(
            version=row.version + 1, cursor=cursor, next_fire_at=next_at, updated_at=now, **values
        )
    )
    return (yield from get_schedule(row.job_name, row.key))


def _clock_now(dialect: str) -> Op[datetime]:
    """The database's clock now (PostgreSQL's `now()` is the transaction's start)."""
    if dialect != "postgresql":
        return (yield from clock())
    value: datetime = (yield sa.select(sa.func.clock_timestamp(type_=UTCDateTime()))).scalar_one()
    return value


def withdraw_ahead(job: str, key: str, now: datetime) -> Op[int]:
    """Delete the schedule's slots due after `now` that no worker claimed (queued, or
    recorded skipped while it was paused): the planner records them again from the changed
    schedule."""
    gone = yield job_runs.delete().where(
        job_runs.c.job_name == job,
        job_runs.c.schedule_key == key,
        job_runs.c.trigger == "schedule",
        job_runs.c.scheduled_for > now,
        (job_runs.c.status == "queued")
        | ((job_runs.c.status == "skipped") & (job_runs.c.reason == "paused")),
    )
    return int(gone.rowcount)


def _settle_due(job: str, key: str, now: datetime, *, end: bool) -> Op[None]:
    """The schedule's runs due by `now` and still queued: skipped (paused) at a pause;
    cancelled at its end, retries included."""
    which = [job_runs.c.job_name == job, job_runs.c.schedule_key == key]
    which.append(job_runs.c.status == "queued")
    if not end:
        which += [job_runs.c.trigger == "schedule", job_runs.c.scheduled_for <= now]
    status, reason = ("cancelled", "schedule deleted") if end else ("skipped", "paused")
    yield job_runs.update().where(*which).values(status=status, reason=reason, finished_at=db_now())


MAX_BACKFILL = 10_000  # slots one backfill may queue


def backfill(
    dialect: str, job: str, key: str | None, since: datetime, until: datetime, dry_run: bool
) -> Op[tuple[list[datetime], int]]:
    """Queue the slots in [since, until] of the job's TOML schedule (`key` None) or of its
    live runtime schedule `key` that have no row yet, as backfill (`runtime.backfill_slots`);
    returns those slots and how many of the window's slots had a row. Nothing is written
    with `dry_run`; a second backfill of the window queues nothing (the slot key)."""
    entry = yield from get_job(job)
    row = (yield from _live(job, key)) if key is not None else None
    cron = row.cron if row else entry.cron
    if cron is None:
        raise InvalidArguments(f"job {job!r} has no cron, so no slots to backfill")
    now = yield from clock()
    if until > now or since > until:
        raise InvalidArguments(
            f"backfill window {since.isoformat()} .. {until.isoformat()}: it must lie in the "
            f"past (now {now.isoformat()}) with its start before its end"
        )
    zone = (row.timezone if row else None) or entry.timezone
    schedule = Schedule.of(cron, ZoneInfo(zone))
    times = schedule.between(since - timedelta(microseconds=1), until, limit=MAX_BACKFILL + 1)
    if len(times) > MAX_BACKFILL:
        raise InvalidArguments(
            f"the window holds more than {MAX_BACKFILL:,} slots of {cron!r}: backfill it in parts"
        )
    found = (
        yield sa.select(job_runs.c.scheduled_for)
        .distinct()
        .where(
            job_runs.c.job_name == job,
            job_runs.c.schedule_key == (key or ""),
            job_runs.c.scheduled_for >= since,
            job_runs.c.scheduled_for <= until,
        )
    )
    recorded = set(found.scalars())
    missing = [t for t in times if t not in recorded]
    if missing and not dry_run:
        yield from insert_slots(dialect, backfill_slots(entry, row, missing, now))
    return missing, len(times) - len(missing)


def retire_schedules(jobs: Sequence[str]) -> Op[list[tuple[str, str]]]:
    """The live schedules of jobs that left the catalog are recorded `retired`, visibly;
    returns their (job, key)."""
    if not jobs:
        return []
    found = yield (
        jobrunner_schedules.update()
        .where(_T.job_name.in_(list(jobs)), _T.status.in_(LIVE))
        .values(
            status="retired",
            status_note="its job is no longer in any live worker's config",
            next_fire_at=None,
            version=_T.version + 1,
        )
        .returning(_T.job_name, _T.key)
    )
    return [(j, k) for j, k in found]


def next_schedule_fire(dialect: str, jobs: Sequence[str]) -> Op[datetime | None]:
    """The earliest next fire time of a live schedule of `jobs` (one index read)."""
    if not jobs:
        return None
    found = yield (
        sa.select(sa.func.min(_T.next_fire_at)).where(
            _T.next_fire_at.is_not(None), any_of(dialect, _T.job_name, "jobs")
        ),
        {"jobs": list(jobs)},
    )
    value: datetime | None = found.scalar()
    return value


def plan_due(
    dialect: str, jobs: Sequence[str], horizon: datetime, limit: int, plan: Planner
) -> Op[int]:
    """Claim up to `limit` schedules of `jobs` due by `horizon` (SKIP LOCKED: a peer
    planning them passes them over), record the slots `plan` gives for each and move their
    cursors to `horizon` and their next fire times on; returns how many were planned."""
    found = yield (
        sa.select(jobrunner_schedules)
        .where(
            _T.next_fire_at.is_not(None),
            _T.next_fire_at <= horizon,
            any_of(dialect, _T.job_name, "jobs"),
        )
        .order_by(_T.next_fire_at)
        .limit(limit)
        .with_for_update(skip_locked=True),
        {"jobs": list(jobs)},
    )
    rows = [ScheduleRow(**r._mapping) for r in found]
    if not rows:
        return 0
    planned = [plan(row) for row in rows]
    yield from insert_slots(dialect, [s for slots, _ in planned for s in slots])
    moved = [
        {"j": row.job_name, "k": row.key, "n": next_at}
        for row, (_, next_at) in zip(rows, planned, strict=True)
    ]
    yield _advance_statement(dialect), rows_of(dialect, moved, cursor=horizon)
    return len(rows)


@functools.cache
def _advance_statement(dialect: str) -> sa.Update:
    """Move the cursors of schedules `j`/`k` to `:cursor` and their next fire times to `n`:
    one statement of fixed text on PostgreSQL (see `sql.rows`), executemany on SQLite."""
    if dialect == "postgresql":
        given = unnest(("j", sa.String()), ("k", sa.String()), ("n", UTCDateTime()))
        job, key, next_at = given.c.j, given.c.k, given.c.n
    else:
        job, key = sa.bindparam("j", type_=sa.String()), sa.bindparam("k", type_=sa.String())
        next_at = sa.bindparam("n", type_=UTCDateTime())
    return (
        jobrunner_schedules.update()
        .where(_T.job_name == job, _T.key == key)
        .values(cursor=sa.bindparam("cursor", type_=UTCDateTime()), next_fire_at=next_at)
    )
