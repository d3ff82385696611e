"""The slot ledger: scheduled slots as rows of `job_runs`, one per (job, slot, attempt).

The unique key (job_name, scheduled_for, attempt) of scheduled runs makes "one start per slot"
a constraint: every replica may record the same slots, only the first insert counts.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from jobrunner.records import Run, Slot
from jobrunner.store.engine import db_now
from jobrunner.store.queue import wake
from jobrunner.store.sql import Op, any_of, json_text, rows
from jobrunner.store.sql import given as given_values
from jobrunner.store.tables import SCHEDULED, SLOT_KEY, UTCDateTime, job_runs


def slot_cursors(dialect: str, names: list[str]) -> Op[dict[str, datetime]]:
    """The newest recorded slot of each named job that has one."""
    if not names:
        return {}
    found = yield (
        sa.select(job_runs.c.job_name, sa.func.max(job_runs.c.scheduled_for))
        .where(
            any_of(dialect, job_runs.c.job_name, "names"),
            job_runs.c.scheduled_for.is_not(None),
            job_runs.c.schedule_key == "",
        )
        .group_by(job_runs.c.job_name),
        {"names": names},
    )
    return {row[0]: row[1] for row in found}


def insert_slots(dialect: str, slots: Sequence[Slot]) -> Op[int]:
    """Record scheduled slots in one statement; returns how many were new.

    Idempotent: the unique key (job_name, scheduled_for, attempt) makes a slot that any
    replica already recorded a no-op (`ON CONFLICT DO NOTHING`), so every replica may try.
    Wakes listening workers when a slot is queued.
    """
    if not slots:
        return 0
    values = [
        {
            "j": s.job_name,
            "sf": s.scheduled_for,
            "ra": s.run_at,
            "st": s.status,
            "why": s.reason,
            "ma": s.max_attempts,
            "pr": s.priority,
            "ck": s.concurrency_key,
            "kw": json.dumps(s.kwargs, separators=(",", ":")) if s.kwargs else "{}",
            "sk": s.schedule_key,
            "sv": s.schedule_version,
            "ov": s.overlap,
        }
        for s in slots
    ]
    inserted = len((yield _slots_statement(dialect), rows(dialect, values)).all())
    if any(s.status == "queued" for s in slots):
        yield from wake(dialect, "slots")
    return inserted


@functools.cache
def _slots_statement(dialect: str) -> Any:
    """Record scheduled slots, idempotently (`ON CONFLICT DO NOTHING`), given as `j` (job),
    `sf` (slot), `ra` (run_at), `st` (status), `why` (reason), `ma` (max attempts), `pr`
    (priority), `ck` (concurrency key), `kw` (kwargs as JSON text), and of a runtime
    schedule's slot `sk` (its key), `sv` (its version) and `ov` (its overlap).

    PostgreSQL: one statement of fixed text whatever the count, each of them an array
    parameter (`v_j`, ...): 10,000 slots due at one minute took 1.1 s as an executemany,
    0.2 s so. SQLite: executemany, RETURNING the new ids (it has no array type)."""
    keys: dict[str, Any] = {
        "j": sa.String(),
        "sf": UTCDateTime(),
        "ra": UTCDateTime(),
        "st": sa.String(),
        "why": sa.String(),
        "ma": sa.Integer(),
        "pr": sa.Integer(),
        "ck": sa.String(),
        "kw": sa.Text(),
        "sk": sa.String(),
        "sv": sa.Integer(),
        "ov": sa.String(),
    }
    given = given_values(dialect, keys)
    values = {
        "job_name": given["j"],
        "trigger": sa.literal("schedule"),
        "scheduled_for": given["sf"],
        "run_at": given["ra"],
        "status": given["st"],
        "reason": given["why"],
        "attempt": sa.literal(1),
        "max_attempts": given["ma"],
        "priority": given["pr"],
        "concurrency_key": given["ck"],
        "kwargs": json_text(dialect, given["kw"]),
        "schedule_key": given["sk"],
        "schedule_version": given["sv"],
        "overlap": given["ov"],
        "enqueued_at": db_now(),
        "finished_at": sa.case((given["st"] == "skipped", db_now()), else_=sa.null()),
    }
    insert: Any
    if dialect == "postgresql":
        insert = postgresql.insert(job_runs).from_select(list(values), sa.select(*values.values()))
    else:
        insert = sqlite.insert(job_runs).values(values)
    stmt = insert.on_conflict_do_nothing(index_elements=SLOT_KEY, index_where=SCHEDULED)
    return stmt.returning(job_runs.c.id)


def skipped_rows(slots: Sequence[Slot]) -> Op[list[Run]]:
    """The rows of these slots (first attempts) that are recorded skipped."""
    wanted = [(s.job_name, s.schedule_key, s.scheduled_for) for s in slots if s.status == "skipped"]
    if not wanted:
        return []
    key = sa.tuple_(job_runs.c.job_name, job_runs.c.schedule_key, job_runs.c.scheduled_for)
    rows = yield sa.select(job_runs).where(
        key.in_(wanted), job_runs.c.attempt == 1, job_runs.c.status == "skipped"
    )
    return [Run(**r._mapping) for r in rows]


def slot_runs(job: str, since: datetime, until: datetime, key: str = "") -> Op[list[Run]]:
    """Every run of `job` (of its runtime schedule `key`) whose slot lies in [since, until],
    oldest slot first."""
    found = yield (
        sa.select(job_runs)
        .where(
            job_runs.c.job_name == job,
            job_runs.c.schedule_key == key,
            job_runs.c.scheduled_for >= since,
            job_runs.c.scheduled_for <= until,
        )
        .order_by(job_runs.c.scheduled_for, job_runs.c.attempt)
    )
    return [Run(**r._mapping) for r in found]


def slot_bounds(job: str, key: str = "") -> Op[tuple[datetime | None, datetime | None]]:
    """The oldest and the newest recorded slot of `job` (of its runtime schedule `key`);
    (None, None) if it has none."""
    row = (
        yield sa.select(
            sa.func.min(job_runs.c.scheduled_for), sa.func.max(job_runs.c.scheduled_for)
        ).where(
            job_runs.c.job_name == job,
            job_runs.c.schedule_key == key,
            job_runs.c.scheduled_for.is_not(None),
        )
    ).one()
    return row[0], row[1]
