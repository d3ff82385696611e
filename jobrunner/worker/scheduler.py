"""The scheduler service: records the due slots of cron jobs, ahead of their time.

It owns the `Timetable` (the next fire time of every cron job in a heap, and each job's
cursor, see `jobrunner.worker.timetable`) and sleeps until the next fire time less the
look-ahead, not in a busy poll. Each pass records every slot due within the look-ahead in one
statement (idempotent: every replica may try it, a unique key keeps one row per slot) and
wakes the claimer. Only jobs whose definition matches the catalog's are scheduled here
(`Catalog.owns`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from jobrunner.config import JobConfig
from jobrunner.logging import get_logger
from jobrunner.store.ports import WorkerPort
from jobrunner.worker.backoff import Backoff, Offload, offload, sleep_or
from jobrunner.worker.catalog import Catalog
from jobrunner.worker.metrics import Metrics
from jobrunner.worker.runs import RunTable
from jobrunner.worker.timetable import Plan, Timetable

log = get_logger("jobrunner.worker")
LOOKAHEAD = timedelta(milliseconds=500)  # slots are recorded at least this long before due
MAX_LOOKAHEAD = timedelta(seconds=2)  # ... and at most this long (see run_once)
IDLE = 3600.0  # seconds to sleep with no cron job at all


class Scheduler:
    """Records due slots; `load` reads the cursors first (at start)."""

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
        self.jobs = jobs
        self.store = store
        self.runs = runs
        self.catalog = catalog
        self.metrics = metrics
        self.db = db or offload()
        self.clock = clock
        self.monotonic = monotonic
        self.timetable: Timetable | None = None
        self.lookahead = MAX_LOOKAHEAD  # until a pass has been timed (see run_once)

    async def load(self) -> None:
        """Read each job's slot cursor: scheduling resumes where the last worker left it."""
        cursors = await self.db(self.store.slot_cursors, [j.name for j in self.jobs])
        self.timetable = Timetable(self.jobs, cursors, self.clock())

    async def run(self) -> None:
        backoff = Backoff("scheduler", self.metrics.db_error, self.monotonic)
        stopping = self.runs.stopping
        while not stopping.is_set():
            delay = await backoff.guard(self.run_once)
            await sleep_or(stopping, delay)

    async def run_once(self) -> float:
        """Record every slot due within the look-ahead; returns seconds until the next pass.

        Slots are written ahead of their time (queued, `run_at` = the slot), so at the fire
        time every replica's claimer, sleeping until the earliest `run_at`, only has to claim:
        the start lag is one claim, not a write and a claim. The look-ahead is twice the
        last pass's duration (at least `LOOKAHEAD`, at most `MAX_LOOKAHEAD`, the most before
        the first pass), so that thousands of jobs due at the same minute are still written
        before it, the first minute after start included.
        """
        table = self.timetable
        assert table is not None, "load() first"
        started = self.monotonic()
        clock = self.clock()
        now = clock + self.lookahead  # the horizon: slots up to it are recorded now
        names = table.due(now)
        if names:
            owned = [n for n in names if self.catalog.owns(n)]
            plans_owned = table.plan(owned, clock, ahead=self.lookahead)
            planned = dict(zip(owned, plans_owned, strict=True))
            plans = [planned.get(n, Plan(slots=[])) for n in names]
            try:
                await self.db(self.store.insert_slots, [s for p in plans for s in p.slots])
            except BaseException:
                table.retry_later(names)
                raise
            table.advance(names, now)
            self._report(names, plans)
            self.runs.wake_claimer.set()
            took = timedelta(seconds=self.monotonic() - started)
            self.lookahead = min(max(LOOKAHEAD, 2 * took), MAX_LOOKAHEAD)
        nxt = table.next_due()
        if nxt is None:
            return IDLE
        return max((nxt - self.lookahead - self.clock()).total_seconds(), 0.0)

    def _report(self, names: list[str], plans: list[Plan]) -> None:
        for name, plan in zip(names, plans, strict=True):
            for slot in plan.slots:
                if slot.status == "skipped":
                    self.metrics.slot_skipped(name, slot.reason or "misfired")
            if plan.unrecorded:
                log.warning("missed slots too old to record", job=name, count=plan.unrecorded)
