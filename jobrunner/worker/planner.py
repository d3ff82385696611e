"""The planner service: records the slots of runtime schedules (`Client.create_schedule`).

The schedules live in the database with their next fire times; the planner does not keep
them. Each pass reads the earliest next fire time of a schedule of this worker's jobs (one
index read) and, when it lies within `AHEAD`, claims the due schedules in batches (peers pass
over the ones another replica holds), records their slots with the same plan as a TOML
schedule's (catch-up, jitter, the slot ledger's unique key) and moves each one on. It sleeps
until the next fire time less `AHEAD`, at most `POLL`: a schedule a client creates is seen
within a second, and a replica whose schedules are not due sends one statement a second.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from jobrunner.config import JobConfig
from jobrunner.records import ScheduleRow, Slot
from jobrunner.runtime import effective_job
from jobrunner.store.ports import WorkerPort
from jobrunner.worker.backoff import Backoff, Offload, offload, sleep_or
from jobrunner.worker.catalog import Catalog
from jobrunner.worker.metrics import Metrics
from jobrunner.worker.runs import RunTable
from jobrunner.worker.timetable import plan_slots

AHEAD = timedelta(seconds=2)  # slots are recorded up to this long before they are due
POLL = 1.0  # seconds between looks at the schedules, at most
BATCH = 2_000  # schedules planned per transaction


class SchedulePlanner:
    """Plans the runtime schedules of this worker's jobs (those it owns, `Catalog.owns`)."""

    def __init__(
        self,
        jobs: Sequence[JobConfig],
        store: WorkerPort,
        runs: RunTable,
        catalog: Catalog,
        metrics: Metrics,
        *,
        db: Offload | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jobs = {j.name: j for j in jobs}
        self.store = store
        self.runs = runs
        self.catalog = catalog
        self.metrics = metrics
        self.db = db or offload()
        self.clock = clock
        self.monotonic = monotonic

    async def run(self) -> None:
        backoff = Backoff("planner", self.metrics.db_error, self.monotonic)
        stopping = self.runs.stopping
        while not stopping.is_set():
            delay = await backoff.guard(self.run_once)
            await sleep_or(stopping, delay)

    async def run_once(self) -> float:
        """Plan every schedule due within `AHEAD`; returns seconds until the next pass."""
        owned = [name for name in self.jobs if self.catalog.owns(name)]
        if not owned:
            return POLL
        nxt = await self.db(self.store.next_schedule_fire, owned)
        planned = 0
        while nxt is not None and nxt <= self.clock() + AHEAD:
            now = self.clock()
            count = await self.db(
                self.store.plan_schedules, owned, now + AHEAD, BATCH, self.planner(now)
            )
            planned += count
            if count < BATCH:
                nxt = await self.db(self.store.next_schedule_fire, owned)
                if count == 0:  # the due ones are a peer's (locked): look again soon
                    break
        if planned:
            self.runs.wake_claimer.set()
        if nxt is None:
            return POLL
        return min(max((nxt - AHEAD - self.clock()).total_seconds(), 0.05), POLL)

    def planner(self, now: datetime) -> Callable[[ScheduleRow], tuple[list[Slot], datetime]]:
        """The slots of a schedule up to `now + AHEAD` and its next fire time after them."""
        return lambda row: plan_schedule(self.jobs[row.job_name], row, now)


def plan_schedule(job: JobConfig, row: ScheduleRow, now: datetime) -> tuple[list[Slot], datetime]:
    """A runtime schedule's slots in (its cursor, now + AHEAD], planned as a TOML schedule's
    with the schedule's settings, carrying its key, version, kwargs and overlap; a paused
    schedule's are recorded skipped (`paused`). And its first slot after them."""
    effective = effective_job(job, row)
    plan = plan_slots(effective, row.cursor, now, ahead=AHEAD)
    mark: dict[str, object] = {
        "schedule_key": row.key,
        "schedule_version": row.version,
        "overlap": row.overlap,
        "kwargs": row.kwargs,
    }
    if row.status == "paused":
        mark |= {"status": "skipped", "reason": "paused"}
    slots = [dataclasses.replace(s, **mark) for s in plan.slots]  # type: ignore[arg-type]
    assert effective.schedule is not None
    return slots, effective.schedule.next_after(max(row.cursor, now + AHEAD))
