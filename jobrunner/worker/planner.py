"""The planner service: records the slots of runtime schedules (`Client.create_schedule`).

The schedules live in the database with their next fire times; the planner does not keep
them. Each pass reads the earliest next fire time of a schedule of this worker's jobs (one
index read) and, when it lies within the look-ahead, claims the due schedules in batches
(peers pass over the ones another replica holds), records their slots with the same plan as
a TOML schedule's (catch-up, jitter, the slot ledger's unique key) and moves each one on. It
sleeps until the next fire time less the look-ahead, at most `POLL`: a schedule a client
creates is seen within a second, and a replica whose schedules are not due sends one
statement a second. The look-ahead is twice the last planning pass's duration (at least
`AHEAD`, at most `MAX_AHEAD`): 100,000 schedules due at one minute took seconds to plan,
so their slots are recorded that much earlier the next time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from jobrunner.config import JobConfig
from jobrunner.logging import get_logger
from jobrunner.records import ScheduleRow, Slot
from jobrunner.runtime import effective_job
from jobrunner.store.ports import WorkerPort
from jobrunner.worker.backoff import Backoff, Offload, offload, sleep_or
from jobrunner.worker.catalog import Catalog
from jobrunner.worker.metrics import Metrics
from jobrunner.worker.runs import RunTable
from jobrunner.worker.timetable import plan_slots

AHEAD = timedelta(seconds=2)  # slots are recorded at least this long before they are due
MAX_AHEAD = timedelta(seconds=30)  # ... and at most this long (see the module's doc)
POLL = 1.0  # seconds between looks at the schedules, at most
BATCH = 2_000  # schedules planned per transaction
RETRY_BROKEN = timedelta(minutes=1)  # a schedule that could not be planned, again after
log = get_logger("jobrunner.worker")


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
        self.ahead = AHEAD

    async def run(self) -> None:
        backoff = Backoff("planner", self.metrics.db_error, self.monotonic)
        stopping = self.runs.stopping
        while not stopping.is_set():
            delay = await backoff.guard(self.run_once)
            await sleep_or(stopping, delay)

    async def run_once(self) -> float:
        """Plan every schedule due within the look-ahead; returns seconds until the next pass."""
        owned = [name for name in self.jobs if self.catalog.owns(name)]
        if not owned:
            return POLL
        nxt = await self.db(self.store.next_schedule_fire, owned)
        planned, began = 0, self.monotonic()
        while nxt is not None and nxt <= self.clock() + self.ahead:
            now = self.clock()
            plan = self.planner(now, self.ahead)
            count = await self.db(self.store.plan_schedules, owned, now + self.ahead, BATCH, plan)
            planned += count
            if count < BATCH:
                nxt = await self.db(self.store.next_schedule_fire, owned)
                if count == 0:  # the due ones are a peer's (locked): look again soon
                    break
        if planned:
            self.runs.wake_claimer.set()
            took = timedelta(seconds=self.monotonic() - began)
            self.ahead = min(max(AHEAD, 2 * took), MAX_AHEAD)
        if nxt is None:
            return POLL
        return min(max((nxt - self.ahead - self.clock()).total_seconds(), 0.05), POLL)

    def planner(
        self, now: datetime, ahead: timedelta
    ) -> Callable[[ScheduleRow], tuple[list[Slot], datetime]]:
        """The slots of a schedule up to `now + ahead` and its next fire time after them. A
        schedule that cannot be planned here (a zone this host's tzdata lacks, say) is
        logged and looked at again in `RETRY_BROKEN`: it never stops the others."""

        def plan(row: ScheduleRow) -> tuple[list[Slot], datetime]:
            try:
                return plan_schedule(self.jobs[row.job_name], row, now, ahead)
            except Exception as exc:
                log.error(
                    "runtime schedule not planned", job=row.job_name, key=row.key,
                    error=f"{type(exc).__name__}: {exc}", retry_in=RETRY_BROKEN.total_seconds(),
                )  # fmt: skip
                return [], now + RETRY_BROKEN

        return plan


def plan_schedule(
    job: JobConfig, row: ScheduleRow, now: datetime, ahead: timedelta = AHEAD
) -> tuple[list[Slot], datetime]:
    """A runtime schedule's slots in (its cursor, now + ahead], planned as a TOML schedule's
    with the schedule's settings, carrying its key, version, kwargs and overlap; a paused
    schedule's are recorded skipped (`paused`). And its first slot after them."""
    effective = effective_job(job, row)
    plan = plan_slots(effective, row.cursor, now, ahead=ahead)
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
    return slots, effective.schedule.next_after(max(row.cursor, now + ahead))
