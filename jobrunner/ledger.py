"""The slot ledger behind `jobrunner why JOB`: what became of each expected slot, and why.

Pure functions of the expected slots (from the job's cron over a window), the rows recorded in
`job_runs` and a snapshot of the surroundings (database now, workers, catalog). Every expected
slot gets one `SlotReport`: ran (with the outcome of its last attempt), skipped (with the
reason the claimer recorded: overlap, misfired, paused), queued, running, or "no row" with the
most likely reason. Rows that match no expected slot (an earlier cron) are reported too.

`slot_window` finds the expected slots of a window, `account` turns them and what the store
returned into a `Ledger`, which the CLI renders as a table or as JSON.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from jobrunner.config import format_duration
from jobrunner.policy import WAITS
from jobrunner.records import CatalogEntry, Run, WorkerRow
from jobrunner.schedule import Schedule

State = Literal["ran", "skipped", "queued", "running", "no row", "unexpected"]

RECENT = timedelta(seconds=5)  # a slot this young may not be recorded yet (scheduler.OVERDUE)
MAX_SLOTS = 10_000  # a window reports at most this many slots: the newest


@dataclass(frozen=True, kw_only=True)
class Window:
    """The slots a job's cron expects in a window (start, end], oldest first."""

    expected: list[datetime]  # UTC
    start: datetime  # just before the first expected slot when truncated
    end: datetime
    truncated: bool  # the window held more than the slot limit: only the newest are kept


def slot_window(
    cron: str, tz: ZoneInfo, start: datetime, end: datetime, limit: int = MAX_SLOTS
) -> Window:
    """The expected slots of `cron` in `tz` within (start, end]: the newest `limit` of them."""
    schedule = Schedule(cron, tz)
    expected = schedule.between(start, end, limit=limit)
    truncated = len(expected) == limit and schedule.count_between(start, end, limit + 1) > limit
    first = expected[0] - timedelta(microseconds=1) if truncated else start
    return Window(expected=expected, start=first, end=end, truncated=truncated)


@dataclass(frozen=True, kw_only=True)
class Surroundings:
    """What `why` knows besides the rows: used to explain slots that have none."""

    now: datetime  # the database's clock
    job: CatalogEntry
    first_slot: datetime | None  # oldest slot of the job ever recorded (None: never)
    last_slot: datetime | None  # newest one
    workers: Sequence[WorkerRow]
    lease_ttl: timedelta
    retention: timedelta | None  # [history] retention of this config

    @property
    def live_workers(self) -> list[WorkerRow]:
        return [w for w in self.workers if self.now - w.last_seen <= self.lease_ttl]


@dataclass(frozen=True, kw_only=True)
class SlotReport:
    slot: datetime  # UTC
    state: State
    outcome: str | None = None  # status of the last attempt
    reason: str | None = None
    attempts: int = 0
    worker: str | None = None
    run_ids: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot.isoformat(),
            "state": self.state,
            "outcome": self.outcome,
            "reason": self.reason,
            "attempts": self.attempts,
            "worker": self.worker,
            "run_ids": list(self.run_ids),
        }


def explain(
    expected: Sequence[datetime], runs: Sequence[Run], around: Surroundings
) -> list[SlotReport]:
    """One report per expected slot, plus one per recorded slot that was not expected, by time."""
    by_slot: dict[datetime, list[Run]] = defaultdict(list)
    for run in runs:
        if run.scheduled_for is not None:
            by_slot[run.scheduled_for].append(run)
    reports = [
        _recorded(slot, by_slot[slot]) if slot in by_slot else _missing(slot, around)
        for slot in expected
    ]
    wanted = set(expected)
    for slot, rows in by_slot.items():
        if slot not in wanted:
            report = _recorded(slot, rows)
            reports.append(
                SlotReport(
                    slot=slot,
                    state="unexpected",
                    outcome=report.outcome,
                    reason="not a slot of the current cron: recorded under an earlier definition",
                    attempts=report.attempts,
                    worker=report.worker,
                    run_ids=report.run_ids,
                )
            )
    return sorted(reports, key=lambda r: r.slot)


def _recorded(slot: datetime, rows: Sequence[Run]) -> SlotReport:
    rows = sorted(rows, key=lambda r: (r.attempt, r.id))
    last = rows[-1]
    ids = tuple(r.id for r in rows)
    attempts = sum(1 for r in rows if r.started_at is not None)
    if last.status == "skipped":
        return SlotReport(
            slot=slot, state="skipped", outcome="skipped", reason=last.reason, run_ids=ids
        )
    if last.status in ("queued", "running"):
        reason = last.reason if last.reason in WAITS else None  # a catch-up or backfill slot
        if last.status == "queued" and last.attempt > 1:
            reason = f"retry (attempt {last.attempt} of {last.max_attempts}) queued"
        elif last.status == "running" and last.cancel_requested:
            reason = "cancel requested"
        state: State = "queued" if last.status == "queued" else "running"
        return SlotReport(
            slot=slot,
            state=state,
            outcome=last.status,
            reason=reason,
            attempts=attempts,
            worker=last.worker_id,
            run_ids=ids,
        )
    reason = last.reason
    if last.error:
        reason = f"{last.error.get('type')}: {last.error.get('message')}"
    return SlotReport(
        slot=slot,
        state="ran",
        outcome=last.status,
        reason=reason,
        attempts=attempts,
        worker=last.worker_id,
        run_ids=ids,
    )


def _missing(slot: datetime, around: Surroundings) -> SlotReport:
    return SlotReport(slot=slot, state="no row", reason=why_no_row(slot, around))


def why_no_row(slot: datetime, around: Surroundings) -> str:
    """The most likely reason that no row was recorded for `slot`."""
    if slot > around.now:
        return "not due yet"
    if around.now - slot <= RECENT:
        return "due just now: not recorded yet"
    if around.retention is not None and slot < around.now - around.retention:
        return f"pruned: older than the [history] retention ({format_duration(around.retention)})"
    if around.first_slot is None or slot < around.first_slot:
        first = "none yet" if around.first_slot is None else around.first_slot.isoformat()
        cause = _nobody_scheduling(around)
        if cause:
            return f"before the job's first recorded slot ({first}); now: {cause}"
        return (
            f"before the job's first recorded slot ({first}): the job did not exist yet, "
            "or its history was pruned"
        )
    if around.last_slot is not None and slot > around.last_slot:
        cause = _nobody_scheduling(around)
        return cause or (
            "not recorded although a worker that schedules the job is alive: see that worker's log"
        )
    return (
        "no worker recorded it: the job had another cron then, or no worker was scheduling "
        "for longer than the ledger keeps"
    )


def _nobody_scheduling(around: Surroundings) -> str | None:
    """Why no live worker records the job's slots now, or None if one does."""
    ttl = format_duration(around.lease_ttl)
    live = around.live_workers
    if not live:
        return f"no worker alive (none seen within lease_ttl {ttl}): start `jobrunner run`"
    defining: Mapping[str, str] = {
        w.worker_id: w.jobs[around.job.name] for w in live if around.job.name in w.jobs
    }
    if not defining:
        return f"none of the {len(live)} live worker(s) defines this job in its config"
    if around.job.config_hash not in defining.values():
        return (
            f"no live worker has the catalog's definition of the job "
            f"({around.job.config_hash}); workers with another definition "
            f"({', '.join(sorted(set(defining.values())))}) leave its slots to the newest one"
        )
    return None


def summarize(reports: Sequence[SlotReport]) -> dict[str, int]:
    """Counts by state and outcome: {"ran: succeeded": 3, "skipped: overlap": 1, ...}."""
    counts: dict[str, int] = defaultdict(int)
    for r in reports:
        key: str = r.state
        if r.state == "ran":
            key = f"ran: {r.outcome}"
        elif r.state == "skipped":
            key = f"skipped: {r.reason}"
        counts[key] += 1
    return dict(counts)


@dataclass(frozen=True, kw_only=True)
class Ledger:
    """What became of each slot of a job in a window: what `jobrunner why` shows."""

    job: CatalogEntry
    window: Window
    reports: list[SlotReport]
    summary: dict[str, int]  # see `summarize`

    def as_dict(self) -> dict[str, Any]:
        """The JSON of `jobrunner why --json`."""
        return {
            "job": self.job.name,
            "cron": self.job.cron,
            "timezone": self.job.timezone,
            "paused": self.job.paused,
            "since": self.window.start.isoformat(),
            "until": self.window.end.isoformat(),
            "truncated": self.window.truncated,
            "expected": len(self.window.expected),
            "summary": self.summary,
            "slots": [r.as_dict() for r in self.reports],
        }


def account(window: Window, rows: Sequence[Run], around: Surroundings) -> Ledger:
    """The ledger of `window` from the job's slot rows the store returned for it (rows of
    slots at or before the window's start are left out) and the surroundings."""
    runs = [r for r in rows if r.scheduled_for and r.scheduled_for > window.start]
    reports = explain(window.expected, runs, around)
    return Ledger(job=around.job, window=window, reports=reports, summary=summarize(reports))


def collapse(reports: Sequence[SlotReport]) -> list[list[SlotReport]]:
    """Consecutive slots without a row for the same reason become one group (one range line);
    every other report is a group of its own."""
    groups: list[list[SlotReport]] = []
    for r in reports:
        prev = groups[-1][-1] if groups else None
        if (
            prev is not None
            and r.state == "no row"
            and prev.state == "no row"
            and prev.reason == r.reason
        ):
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups
