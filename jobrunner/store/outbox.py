"""The notification outbox (`jobrunner_outbox`): events written in the transaction of their
cause (`add_events`, called by the outcome, reap, skip and slot operations), claimed for
delivery by any replica (`claim_events`, SKIP LOCKED), then marked delivered, retried later,
or dropped once kept too long, visibly (`drop_expired` returns what it dropped)."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from jobrunner.notify import Event, NotifyTarget, events_for, overdue_events
from jobrunner.records import Outcome, Run, Slot
from jobrunner.store.catalog import clock
from jobrunner.store.engine import db_now
from jobrunner.store.history import runs_by_id
from jobrunner.store.slots import skipped_rows
from jobrunner.store.sql import Op, any_of, insert, json_text
from jobrunner.store.sql import given as given_values
from jobrunner.store.sql import rows as rows_of
from jobrunner.store.tables import job_runs, jobrunner_outbox

_O = jobrunner_outbox.c


@dataclass(frozen=True, kw_only=True)
class Pending:
    """An event claimed for delivery."""

    id: int
    event_id: str
    target: str
    event: str
    body: dict[str, Any]
    attempts: int  # this one included


def add_events(dialect: str, events: Sequence[Event]) -> Op[None]:
    """Write events (idempotent per (event id, target): a cause handled twice adds one): one
    statement of arrays on PostgreSQL whatever their number, executemany on SQLite."""
    if not events:
        return
    rows = [
        {
            "e": e.event_id,
            "t": e.target,
            "ev": e.event,
            "j": e.job,
            "r": e.run_id,
            "b": json.dumps(e.body, separators=(",", ":"), default=str),
        }
        for e in events
    ]
    yield _events_statement(dialect), rows_of(dialect, rows)


@functools.cache
def _events_statement(dialect: str) -> Any:
    kinds: dict[str, Any] = {"e": sa.String(), "t": sa.String(), "ev": sa.String(),
                             "j": sa.String(), "r": sa.BigInteger(), "b": sa.Text()}  # fmt: skip
    given = given_values(dialect, kinds)
    values = {
        "event_id": given["e"],
        "target": given["t"],
        "event": given["ev"],
        "job_name": given["j"],
        "run_id": given["r"],
        "body": json_text(dialect, given["b"]),
        "next_attempt_at": db_now(),
        "created_at": db_now(),
    }
    stmt = insert(dialect, jobrunner_outbox)
    if dialect == "postgresql":
        stmt = stmt.from_select(list(values), sa.select(*values.values()))
    else:
        stmt = stmt.values(values)
    return stmt.on_conflict_do_nothing(index_elements=["event_id", "target"])


def notify_runs(
    dialect: str,
    targets: Sequence[NotifyTarget],
    outcomes: Sequence[tuple[Run, str, bool, Any]],
    now: datetime,
) -> Op[None]:
    """The events of outcomes (run, status, retried, error), for the targets that want them."""
    if not targets or not outcomes:
        return
    events = [
        e
        for run, status, retried, error in outcomes
        for e in events_for(targets, run, status, now, retried=retried, error=error)
    ]
    yield from add_events(dialect, events)


def after_finish(
    dialect: str, targets: Sequence[NotifyTarget], done: Sequence[Outcome], written: set[int]
) -> Op[None]:
    """The events of the outcomes `finish` wrote (in its transaction). The runs come with
    their outcomes (as claimed); only those that do not are read."""
    failed = {
        o.lease.run_id: o for o in done if o.lease.run_id in written and o.status != "succeeded"
    }
    if not targets or not failed:
        return
    known = {rid: o.run for rid, o in failed.items() if o.run is not None}
    runs = list(known.values())
    runs += yield from runs_by_id([rid for rid in failed if rid not in known])
    now = datetime.now(UTC)  # the host's clock (checked against the database's at start)
    outcomes = [
        (r, failed[r.id].status, failed[r.id].retry_in is not None and r.attempt < r.max_attempts,
         failed[r.id].error)
        for r in runs
    ]  # fmt: skip
    yield from notify_runs(dialect, targets, outcomes, now)


def after_reap(dialect: str, targets: Sequence[NotifyTarget], lost: Sequence[Run]) -> Op[None]:
    """The events of runs a reap recorded lost (retried when attempts remain)."""
    if targets and lost:
        now = datetime.now(UTC)  # the host's clock, as after_finish: no statement more
        outcomes = [(r, "lost", r.attempt < r.max_attempts, None) for r in lost]
        yield from notify_runs(dialect, targets, outcomes, now)


def after_skips(
    dialect: str, targets: Sequence[NotifyTarget], skipped: Sequence[tuple[Run, str]]
) -> Op[None]:
    """The events of slots a claim recorded skipped (with their reasons)."""
    if targets and skipped:
        now = datetime.now(UTC)  # the host's clock, as after_finish: no statement more
        outcomes = [
            (dataclasses.replace(r, reason=why), "skipped", False, None) for r, why in skipped
        ]
        yield from notify_runs(dialect, targets, outcomes, now)


def after_slots(
    dialect: str, targets: Sequence[NotifyTarget], recorded: Sequence[Slot]
) -> Op[None]:
    """The events of slots recorded skipped when they were planned (missed: misfired)."""
    if targets and any(s.status == "skipped" for s in recorded):
        rows = yield from skipped_rows(recorded)
        yield from after_skips(dialect, targets, [(r, r.reason or "misfired") for r in rows])


def check_overdue(
    dialect: str, targets: Sequence[NotifyTarget], within: Mapping[str, float]
) -> Op[None]:
    """The dead man's switch: an `overdue` event for each job of `within` (job -> seconds)
    whose last success (else its first run) is older than its window; once per period
    across replicas (the event id is the job's and the period's)."""
    if not targets or not within:
        return
    now = yield from clock()
    events: list[Event] = []
    for job, seconds in within.items():
        since = yield from _last_success_or_first_run(job)
        if since is not None:
            events += overdue_events(targets, job, since, seconds, now)
    yield from add_events(dialect, events)


def _last_success_or_first_run(job: str) -> Op[datetime | None]:
    runs = job_runs.c
    last = (
        yield sa.select(runs.finished_at)
        .where(runs.job_name == job, runs.status == "succeeded")
        .order_by(runs.id.desc())
        .limit(1)
    ).scalar()
    if last is not None:
        return last  # type: ignore[no-any-return]
    first = (yield sa.select(sa.func.min(runs.enqueued_at)).where(runs.job_name == job)).scalar()
    return first  # type: ignore[no-any-return]


def claim_events(
    dialect: str, targets: Sequence[str], limit: int, lease: float
) -> Op[list[Pending]]:
    """Up to `limit` pending events of `targets` due now, oldest first, moved `lease`
    seconds ahead (a replica that dies delivering leaves them to another) and counted."""
    if not targets:
        return []
    due = (
        sa.select(_O.id)
        .where(
            _O.status == "pending", _O.next_attempt_at <= db_now(), any_of(dialect, _O.target, "t")
        )
        .order_by(_O.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = (
        yield (
            jobrunner_outbox.update()
            .where(_O.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=db_now(lease), attempts=_O.attempts + 1)
            .returning(_O.id, _O.event_id, _O.target, _O.event, _O.body, _O.attempts),
            {"t": list(targets)},
        )
    ).all()
    return sorted(
        (Pending(id=r[0], event_id=r[1], target=r[2], event=r[3], body=r[4], attempts=r[5])
         for r in rows),
        key=lambda p: p.id,
    )  # fmt: skip


def delivered(ids: Sequence[int]) -> Op[None]:
    if ids:
        yield (
            jobrunner_outbox.update()
            .where(_O.id.in_(list(ids)))
            .values(status="delivered", delivered_at=db_now(), last_error=None)
        )


def retry_later(event: int, error: str, delay: float) -> Op[None]:
    yield (
        jobrunner_outbox.update()
        .where(_O.id == event, _O.status == "pending")
        .values(next_attempt_at=db_now(delay), last_error=error[:300])
    )


def drop_expired(keep: float) -> Op[list[tuple[str, str, int]]]:
    """Pending events older than `keep` seconds are recorded `dropped`; returns (target,
    event_id, attempts) of each, for the log and the metric."""
    rows = (
        yield jobrunner_outbox.update()
        .where(_O.status == "pending", _O.created_at < db_now(-keep))
        .values(status="dropped")
        .returning(_O.target, _O.event_id, _O.attempts)
    ).all()
    return [(r[0], r[1], int(r[2])) for r in rows]


def outbox_status() -> Op[list[dict[str, Any]]]:
    """Per target and status: how many events, the oldest, the most attempts, the last error."""
    rows = yield (
        sa.select(
            _O.target,
            _O.status,
            sa.func.count(),
            sa.func.min(_O.created_at),
            sa.func.max(_O.attempts),
            sa.func.max(_O.last_error),
        )
        .group_by(_O.target, _O.status)
        .order_by(_O.target, _O.status)
    )
    keys = ("target", "status", "count", "oldest", "most_attempts", "last_error")
    return [dict(zip(keys, r, strict=True)) for r in rows]
