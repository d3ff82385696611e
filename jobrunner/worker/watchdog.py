"""The watchdog service: stops a run before its lease can expire unrenewed (guarantee 10).

A lease is surely still valid, by the database's clock, until `renew_deadline` seconds
(`lease_ttl` less a margin, `WorkerConfig.renew_deadline`) after the claim that took it or the
last renewal that held it was *sent*: the database set its expiry later than that. That moment,
on this process's monotonic clock, is the run's `Active.deadline`; the heartbeat moves it on
each successful renewal. A run still executing past it may have a peer's next attempt beside
it soon, so the watchdog stops it first: an async job is cancelled, a process-isolated job's
child is killed at once; a sync job in a thread cannot be stopped by Python, so its
`ctx.cancelled` is set and a warning names the job. The run is recorded `lost` (and retried if
attempts remain) once the database answers, fenced like every outcome: if a peer took the
lease over meanwhile, the peer has recorded it.

The watchdog needs no database, so it works while the heartbeat hangs on a connection that a
partition froze. It sleeps until the earliest deadline (at most `renew_deadline`: a run
launched meanwhile has a later one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from jobrunner.logging import get_logger
from jobrunner.worker.metrics import Metrics
from jobrunner.worker.runs import Active, RunTable

log = get_logger("jobrunner.worker")
LEAST_SLEEP = 0.01  # seconds: the watchdog's shortest sleep between passes


class Watchdog:
    """Stops the runs whose renew deadline has passed."""

    def __init__(
        self,
        runs: RunTable,
        metrics: Metrics,
        *,
        renew_deadline: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runs = runs
        self.metrics = metrics
        self.renew_deadline = renew_deadline
        self.monotonic = monotonic

    async def run(self) -> None:
        while True:
            delay = self.run_once()
            await asyncio.sleep(delay)

    def run_once(self) -> float:
        """Stop every executing run past its deadline; returns the seconds until the next
        deadline of a run still executing (at most `renew_deadline`)."""
        now = self.monotonic()
        earliest = now + self.renew_deadline
        for active in list(self.runs.active.values()):
            task = active.task
            if task is None or task.done() or active.stop_reason is not None:
                continue
            if active.deadline <= now:
                self._stop(active, now)
            elif active.deadline < earliest:
                earliest = active.deadline
        return max(earliest - now, LEAST_SLEEP)

    def _stop(self, active: Active, now: float) -> None:
        job = active.job
        self.metrics.deadline_stop(job.name)
        log.warning(
            "renew deadline passed: stopping run (its lease may expire before it is renewed)",
            run_id=active.claimed.run.id,
            job=job.name,
            overdue_seconds=round(now - active.deadline, 3),
        )
        active.stop("deadline")
        if not job.is_async and job.isolation == "thread":
            log.warning(
                "a sync job in a thread cannot be stopped: ctx.cancelled is set, but it runs "
                "on until it returns, beside a peer's next attempt (isolation = 'process' "
                "can be killed)",
                run_id=active.claimed.run.id,
                job=job.name,
            )
