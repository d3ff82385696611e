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
from collections.abc import Callable
from typing import TYPE_CHECKING

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
