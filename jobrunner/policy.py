"""Decisions that need no database, as pure functions of their inputs.

- `retry_after`: whether a run that ended gets another attempt, and when (the worker asks it
  for each outcome, the reaper for each lost run: one rule for both).
- `decide_claim`: what a claim does with each due candidate (start it on a free lease slot,
  skip it and why, replace the holder, or leave it queued), given the held leases, the jobs'
  policies and the database's now. The store fetches the candidates and writes the result.

Catch-up (which missed slots run after an outage) is `jobrunner.worker.timetable.plan_slots`.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobrunner.records import Lease, Overlap, Policy, Run

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


LaneKey = tuple[str, str]  # (job, concurrency key value; '' for a job without a key)


BACKFILL = "backfill"  # reason on a slot queued by `schedules backfill`: waits, never misfires
WAITS = ("catch-up", BACKFILL)  # slots that wait for their lane's holder instead of skipping
SCHEDULE_LANE = "\x1e"  # a runtime schedule's lane is "\x1eKEY": no concurrency key holds it


def lane_key(run: Run, pol: Policy) -> LaneKey:
    """Whose lease slots a run takes: its job's, its (job, key)'s, or, for a runtime
    schedule's run of a job without a concurrency key whose overlap is `forbid` or
    `replace`, its schedule's: one user's slot never skips or replaces another's. With
    `allow` a schedule's runs share the job's slots (its `max_concurrency`)."""
    if pol.keyed:
        return (run.job_name, run.concurrency_key or "")
    if run.schedule_key and pol.overlap != "allow":
        return (run.job_name, SCHEDULE_LANE + run.schedule_key)
    return (run.job_name, "")


def rate_key(run: Run, pol: Policy) -> LaneKey:
    """Whose rate window a run counts in: its (job, key)'s, else its job's (a runtime
    schedule's runs count in their job's: `rate_limit` holds for the job)."""
    return (run.job_name, (run.concurrency_key or "") if pol.keyed else "")


def policy_of(run: Run, policies: Mapping[str, Policy]) -> Policy:
    """The run's job's policy, with its runtime schedule's overlap if that overrides it."""
    pol = policies[run.job_name]
    if run.overlap is None or run.overlap == pol.overlap:
        return pol
    return _overridden(pol, run.overlap)


@functools.lru_cache(maxsize=256)
def _overridden(pol: Policy, overlap: Overlap) -> Policy:
    return dataclasses.replace(pol, overlap=overlap)


@dataclass(frozen=True, kw_only=True)
class Decisions:
    """What a claim does with its candidates (see `decide_claim`)."""

    start: list[tuple[Run, int]] = field(default_factory=list)  # run, free lease slot
    skip: list[tuple[Run, str]] = field(default_factory=list)  # run, reason
    replace: list[tuple[Run, Lease]] = field(default_factory=list)  # run, the lease it takes
    waiting: int = 0  # due candidates left queued: their job (or key) is at capacity or rate
    passed_over: int = 0  # of those, runs of a concurrency key or rate limit (see claim)
    # the rate windows this claim started runs in: (job, key) -> (start times, when the
    # window admits the next start, or None)
    rates: dict[LaneKey, tuple[list[float], float | None]] = field(default_factory=dict)


def decide_claim(
    candidates: Sequence[tuple[Run, bool]],
    held: Mapping[LaneKey, Mapping[int, Lease]],
    policies: Mapping[str, Policy],
    now: datetime,
    rates: Mapping[LaneKey, Sequence[float]] | None = None,
) -> Decisions:
    """Decide each queued candidate (with its job's paused flag), in claim order.

    A run due later than `now` (claimed ahead) only takes a free lease slot, else stays
    queued; every other decision waits for its time. A due scheduled slot is skipped if its
    job is paused, or if it is later than `misfire_grace` (`misfired`). Otherwise a run takes
    a free lease slot of its job (of its (job, key) with a concurrency key); at capacity, a
    scheduled slot of an overlap `replace` job replaces the holder of slot 0 (once per
    claim), one of an overlap `forbid` job whose slots were all held before this claim is
    skipped (`overlap`), and anything else (manual runs, retries, catch-up and backfill
    slots, slots behind one of this claim) waits for the holder; a backfill slot never
    misfires. A job with a rate limit starts a run only
    if fewer than N of its (key's) starts in `rates` (seconds since the epoch) lie within
    the window before it; else the run waits.
    """
    start: list[tuple[Run, int]] = []
    skip: list[tuple[Run, str]] = []
    replace: list[tuple[Run, Lease]] = []
    lanes: dict[LaneKey, _Lanes] = {}
    windows: dict[LaneKey, _Window] = {}
    waiting = passed_over = 0
    for run, paused in candidates:
        pol = policy_of(run, policies)
        key = lane_key(run, pol)
        job_lanes = lanes.get(key)
        if job_lanes is None:
            job_lanes = lanes[key] = _Lanes(held.get(key, {}), pol.capacity)
        window = None
        if pol.rate is not None:
            rkey = rate_key(run, pol)
            window = windows.get(rkey)
            if window is None:
                window = windows[rkey] = _Window(pol.rate, (rates or {}).get(rkey, ()))
        decision = _decide_one(run, paused, pol, job_lanes, window, now)
        if isinstance(decision, int):
            start.append((run, decision))
        elif isinstance(decision, Lease):
            replace.append((run, decision))
        elif isinstance(decision, str):
            skip.append((run, decision))
        elif run.run_at <= now:  # a run claimed ahead that stays queued is not waiting
            waiting += 1
            passed_over += pol.keyed or pol.rate is not None
    used = {key: (w.starts, w.next_start()) for key, w in windows.items() if w.changed}
    return Decisions(
        start=start,
        skip=skip,
        replace=replace,
        waiting=waiting,
        passed_over=passed_over,
        rates=used,
    )


def _decide_one(
    run: Run, paused: bool, pol: Policy, lanes: _Lanes, window: _Window | None, now: datetime
) -> int | str | Lease | None:
    """A slot to start on, a reason to skip, a lease to replace, or None (stays queued)."""
    scheduled = run.trigger == "schedule"
    if run.run_at > now:  # claimed ahead: only onto a free lease slot, else left queued
        if paused and scheduled:
            return None
        return _start_on(lanes.take, window, run.run_at.timestamp())
    if scheduled and paused:
        return "paused"
    late = now - run.run_at > timedelta(seconds=pol.misfire_grace)
    if scheduled and run.scheduled_for is not None and late and run.reason != BACKFILL:
        return "misfired"
    slot = _start_on(lanes.take, window, now.timestamp())
    if slot is not None or (window is not None and not window.allows(now.timestamp())):
        return slot  # started, or waits for its rate window
    if scheduled and pol.overlap == "replace" and 0 in lanes.held:
        if not lanes.take_for_replace():
            return None
        if window is not None:
            window.add(now.timestamp())
        return lanes.held[0]
    if scheduled and not lanes.had_room and run.reason not in WAITS:
        return "overlap"  # a run from before still holds the lease
    return None  # runs after the holder: a catch-up or backfill slot, or one of this batch


def _start_on(take: Callable[[], int | None], window: _Window | None, at: float) -> int | None:
    """A free lease slot for a run starting at `at` (seconds since the epoch), if its rate
    window admits it (the start is then counted)."""
    if window is not None and not window.allows(at):
        return None
    slot = take()
    if slot is not None and window is not None:
        window.add(at)
    return slot


class _Window:
    """The start times of one rate window during one claim: at most `count` in any
    `seconds`. A start at t is admitted when fewer than `count` known starts are later than
    t - seconds (later ones included: a peer's claim may have begun earlier and started
    later), which bounds every window that holds t. Kept sorted: each start costs a bisect."""

    def __init__(self, rate: tuple[int, float], starts: Sequence[float]) -> None:
        self.count, self.seconds = rate
        self._starts = sorted(starts)
        self.changed = False

    def allows(self, at: float) -> bool:
        later = len(self._starts) - bisect.bisect_right(self._starts, at - self.seconds)
        return later < self.count

    def add(self, at: float) -> None:
        bisect.insort(self._starts, at)
        self.changed = True

    @property
    def starts(self) -> list[float]:
        """The starts to keep: two windows back from the latest (claims that began a little
        earlier still see the starts they must count)."""
        if not self._starts:
            return []
        first = bisect.bisect_right(self._starts, self._starts[-1] - 2 * self.seconds)
        return self._starts[first:]

    def next_start(self) -> float | None:
        """The earliest time the window admits another start (the N-th latest start plus
        the window), or None while it holds fewer than N starts."""
        if len(self._starts) < self.count:
            return None
        return self._starts[-self.count] + self.seconds


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
