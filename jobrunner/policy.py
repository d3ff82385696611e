"""Decisions that need no database, as pure functions of their inputs.

- `retry_after`: whether a run that ended gets another attempt, and when (the worker asks it
  for each outcome, the reaper for each lost run: one rule for both).
- `decide_claim`: what a claim does with each due candidate (start it on a free lease slot,
  skip it and why, replace the holder, or leave it queued), given the held leases, the jobs'
  policies and the database's now. The store fetches the candidates and writes the result.

Catch-up (which missed slots run after an outage) is `jobrunner.worker.timetable.plan_slots`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobrunner.records import Lease, Policy, Run

if TYPE_CHECKING:
    from jobrunner.config import JobConfig

RETRYABLE = frozenset({"failed", "timed_out", "lost"})


def retry_delay(job: JobConfig, attempt: int, rand: Callable[[], float] = random.random) -> float:
    """`retry_backoff` x 2^(attempt-1), capped at `retry_backoff_max`, with +-25% jitter."""
    base = job.retry_backoff.total_seconds() * 2.0 ** (attempt - 1)
    capped = min(base, job.retry_backoff_max.total_seconds())
    return capped * (0.75 + rand() / 2)


def retry_after(
    *,
    status: str,
    attempt: int,
    max_attempts: int,
    stop_reason: str | None = None,
    job: JobConfig | None = None,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds until the next attempt of a run that ended with `status`, or None for none.

    Only runs with attempts left are retried. A run `lost` (its holder died) or stopped by
    its worker's shutdown did not fail on its own: it is retried at once. A run that
    `failed` or `timed_out` waits `retry_delay` of its job (at once without one)."""
    if attempt >= max_attempts:
        return None
    if stop_reason == "shutdown" or status == "lost":
        return 0.0
    if status not in RETRYABLE:
        return None
    return 0.0 if job is None else retry_delay(job, attempt, rand)


@dataclass(frozen=True, kw_only=True)
class Decisions:
    """What a claim does with its candidates (see `decide_claim`)."""

    start: list[tuple[Run, int]] = field(default_factory=list)  # run, free lease slot
    skip: list[tuple[Run, str]] = field(default_factory=list)  # run, reason
    replace: list[tuple[Run, Lease]] = field(default_factory=list)  # run, the lease it takes
    waiting: int = 0  # due candidates left queued: their job is at capacity


def decide_claim(
    candidates: Sequence[tuple[Run, bool]],
    held: Mapping[str, Mapping[int, Lease]],
    policies: Mapping[str, Policy],
    now: datetime,
) -> Decisions:
    """Decide each queued candidate (with its job's paused flag), in claim order.

    A run due later than `now` (claimed ahead) only takes a free lease slot, else stays
    queued; every other decision waits for its time. A due scheduled slot is skipped if its
    job is paused, or if it is later than `misfire_grace` (`misfired`). Otherwise a run takes
    a free lease slot of its job; at capacity, a scheduled slot of an overlap `replace` job
    replaces the holder of slot 0 (once per claim), one of an overlap `forbid` job whose
    slots were all held before this claim is skipped (`overlap`), and anything else (manual
    runs, retries, catch-up slots, slots behind one of this claim) waits for the holder.
    """
    start: list[tuple[Run, int]] = []
    skip: list[tuple[Run, str]] = []
    replace: list[tuple[Run, Lease]] = []
    lanes: dict[str, _Lanes] = {}
    waiting = 0
    for run, paused in candidates:
        pol = policies[run.job_name]
        job_lanes = lanes.get(run.job_name)
        if job_lanes is None:
            job_lanes = lanes[run.job_name] = _Lanes(held.get(run.job_name, {}), pol.capacity)
        decision = _decide_one(run, paused, pol, job_lanes, now)
        if isinstance(decision, int):
            start.append((run, decision))
        elif isinstance(decision, Lease):
            replace.append((run, decision))
        elif isinstance(decision, str):
            skip.append((run, decision))
        elif run.run_at <= now:  # a run claimed ahead that stays queued is not waiting
            waiting += 1
    return Decisions(start=start, skip=skip, replace=replace, waiting=waiting)


def _decide_one(
    run: Run, paused: bool, pol: Policy, lanes: _Lanes, now: datetime
) -> int | str | Lease | None:
    """A slot to start on, a reason to skip, a lease to replace, or None (stays queued)."""
    scheduled = run.trigger == "schedule"
    if run.run_at > now:  # claimed ahead: only onto a free lease slot, else left queued
        return None if paused and scheduled else lanes.take()
    if scheduled and paused:
        return "paused"
    late = now - run.run_at > timedelta(seconds=pol.misfire_grace)
    if scheduled and run.scheduled_for is not None and late:
        return "misfired"
    slot = lanes.take()
    if slot is not None:
        return slot
    if scheduled and pol.overlap == "replace" and 0 in lanes.held:
        return lanes.held[0] if lanes.take_for_replace() else None
    if scheduled and not lanes.had_room and run.reason != "catch-up":
        return "overlap"  # a run from before still holds the lease
    return None  # runs after the holder: a catch-up slot, or one of this batch


class _Lanes:
    """Hands out free lease slots of one job during one claim (slot numbers 0, 1, ...)."""

    def __init__(self, held: Mapping[int, Lease], capacity: int | None) -> None:
        self.held = held
        self.capacity = capacity
        self.busy = set(held)
        self.had_room = self._free() is not None
        self._next = 0
        self._replaced = False

    def _free(self) -> int | None:
        slot = 0
        while slot in self.busy:
            slot += 1
        return slot if self.capacity is None or slot < self.capacity else None

    def take(self) -> int | None:
        while self._next in self.busy:
            self._next += 1
        if self.capacity is not None and self._next >= self.capacity:
            return None
        self.busy.add(self._next)
        return self._next

    def take_for_replace(self) -> bool:
        """The first scheduled run that finds slot 0 held may replace its holder, once."""
        if self._replaced:
            return False
        self._replaced = True
        return True
