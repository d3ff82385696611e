"""Which slots to record, and when to wake next: pure functions of an explicit `now`.

Each cron job has a *cursor*: the newest instant up to which its slots are recorded. A tick
records every slot in (cursor, now] and moves the cursor to now. Slots are computed on the host
(the worker refuses to start if its clock is far from the database's).

Catch-up (guarantee 2). A slot first seen more than `OVERDUE` after its time came due while no
worker was scheduling (all replicas down, or the database unreachable). What becomes of such
*missed* slots is the job's `catch_up`:
- `skip`: recorded `skipped` (reason `misfired`); scheduling resumes from now.
- `latest`: the newest missed slot runs once (if within `misfire_grace`, and only when no
  on-time slot runs in the same tick); the others are recorded skipped.
- `all`: every missed slot within `misfire_grace` runs, at most `max_catch_up` (the newest);
  the others are recorded skipped.
Missed slots that run carry the reason `catch-up` and run one after another: with overlap
`forbid` they wait for the lease instead of being skipped. So every expected slot gets a row.
At most `LEDGER_LIMIT` + `max_catch_up` rows are written per
job and tick; older slots of a very long outage are counted in a warning instead.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobrunner.config import JobConfig
from jobrunner.records import Slot

OVERDUE = timedelta(seconds=5)
CATCH_UP = "catch-up"  # reason on a missed slot that runs: it waits for the lease, never skips
LEDGER_LIMIT = 1000


@dataclass(frozen=True, kw_only=True)
class Plan:
    slots: list[Slot]
    unrecorded: int = 0  # missed slots too old to get a row (counted up to a bound)


def plan_slots(
    job: JobConfig,
    cursor: datetime,
    now: datetime,
    rand: Callable[[], float] = random.random,
    *,
    ahead: timedelta = timedelta(0),
) -> Plan:
    """The slots of `job` in (cursor, now + ahead], each queued or skipped per the catch-up
    policy. Whether a slot is late is judged against `now`, the clock, so slots recorded
    `ahead` of their time are on time however far ahead."""
    schedule = job.schedule
    until = now + ahead
    if schedule is None or until <= cursor:
        return Plan(slots=[])
    cap = LEDGER_LIMIT + job.max_catch_up
    times = schedule.between(cursor, until, limit=cap)
    unrecorded = 0
    if len(times) == cap:  # counted up to a bound: a year of per-second slots must stay cheap
        unrecorded = schedule.count_between(cursor, until, cap=10 * cap) - cap
    on_time = {t for t in times if now - t <= OVERDUE}
    missed = [t for t in times if now - t > OVERDUE]
    to_run = on_time | _missed_to_run(job, missed, now, bool(on_time))
    max_attempts = job.retries + 1
    key = job.key_of(job.kwargs)
    slots = []
    for t in times:
        runs = t in to_run
        jitter = timedelta(seconds=rand() * job.jitter.total_seconds()) if runs else timedelta(0)
        slots.append(
            Slot(
                job_name=job.name,
                scheduled_for=t,
                run_at=t + jitter,
                max_attempts=max_attempts,
                priority=job.priority,
                concurrency_key=key,
                status="queued" if runs else "skipped",
                reason=(None if t in on_time else CATCH_UP) if runs else "misfired",
            )
        )
    return Plan(slots=slots, unrecorded=max(unrecorded, 0))


def _missed_to_run(
    job: JobConfig, missed: list[datetime], now: datetime, on_time: bool
) -> set[datetime]:
    within = [t for t in missed if now - t <= job.misfire_grace]
    if job.catch_up == "skip" or not within:
        return set()
    if job.catch_up == "latest":
        return set() if on_time else {within[-1]}
    return set(within[-job.max_catch_up :])


class Timetable:
    """The next fire time of every cron job in a heap, and each job's cursor."""

    def __init__(self, jobs: Iterable[JobConfig], cursors: dict[str, datetime], now: datetime):
        self.jobs = {j.name: j for j in jobs if j.schedule is not None}
        self.cursors = {name: cursors.get(name, now) for name in self.jobs}
        self._heap: list[tuple[datetime, str]] = []
        for name in self.jobs:
            self._push(name)

    def _push(self, name: str) -> None:
        schedule = self.jobs[name].schedule
        assert schedule is not None
        heapq.heappush(self._heap, (schedule.next_after(self.cursors[name]), name))

    def next_due(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def due(self, now: datetime) -> list[str]:
        """Names of jobs with a slot due at or before `now` (they stay pending until `advance`)."""
        names = []
        while self._heap and self._heap[0][0] <= now:
            names.append(heapq.heappop(self._heap)[1])
        return names

    def plan(self, names: list[str], now: datetime, ahead: timedelta = timedelta(0)) -> list[Plan]:
        """The slots of `names` up to `now + ahead` (see `plan_slots`)."""
        return [plan_slots(self.jobs[n], self.cursors[n], now, ahead=ahead) for n in names]

    def advance(self, names: list[str], now: datetime) -> None:
        """The slots of `names` up to `now` are recorded: move their cursors and re-arm."""
        for name in names:
            self.cursors[name] = max(self.cursors[name], now)
            self._push(name)

    def retry_later(self, names: list[str]) -> None:
        """Recording failed: keep the cursors so the next tick covers the same slots."""
        for name in names:
            self._push(name)
