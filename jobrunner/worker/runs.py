"""The run table: the one piece of state the worker's services share.

A run enters it when the claimer launches it (`active`, `executing`), leaves `executing` when
its call returns (its place is free again), waits in `pending` until the recorder has written
its outcome, and leaves `active` then (its lease is released with that write). The heartbeat
reads it to renew and judge the runs' leases; the supervisor reads it to drain.

The services are handed this object; each keeps everything else it needs to itself. The hot
path (claim -> launch -> execute -> record -> flush) touches its attributes directly: one
attribute access more than when they were the worker's own, no call, no lock (the services
share one event loop).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Collection, Container, Iterable
from dataclasses import dataclass
from typing import Any

from jobrunner.config import JobConfig
from jobrunner.context import KILL_AT_ONCE, JobContext
from jobrunner.records import ClaimedRun, Outcome


@dataclass(kw_only=True)
class Active:
    """A run executing in this worker."""

    claimed: ClaimedRun
    job: JobConfig
    ctx: JobContext
    begin_at: float = 0.0  # monotonic time when it is due (claimed ahead of its time)
    # monotonic time until which its lease is surely valid (renew deadline, guarantee 10):
    # when its claim or its last successful renewal was sent, plus `renew_deadline`
    deadline: float = math.inf
    task: asyncio.Task[None] | None = None
    stop_reason: str | None = None  # lost | deadline | cancelled | shutdown
    span: Any = None  # its OpenTelemetry span (`jobrunner.tracing`), if there is one

    def stop(self, reason: str) -> None:
        """Cancel the run (once; the first reason is the one recorded). Past its renew
        deadline (`reason` "deadline") a child process is killed without a grace."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.ctx.cancelled.set()
            if self.task is not None:
                self.task.cancel(KILL_AT_ONCE if reason == "deadline" else None)


class RunTable:
    """The runs of this worker between their claim and their written outcome, and the events
    that wake the services which act on them."""

    def __init__(self, concurrency: int, *, limited: Collection[str] = ()) -> None:
        self.concurrency = concurrency
        self.limited = frozenset(limited)  # jobs of limited concurrency (overlap forbid/max)
        self.active: dict[int, Active] = {}  # until the outcome is written
        self.executing = 0  # runs whose call has not returned yet
        self.unstarted = 0  # runs launched whose task has not begun yet
        self.pending: list[Outcome] = []  # outcomes the recorder has not written yet
        self.unwritten: Counter[str] = Counter()  # limited job -> its outcomes not written
        # Pipelining under load: while the last claim filled every free place (a backlog),
        # the claimer is woken as soon as a quarter of the places are free again, so the
        # next claim overlaps with writing the outcomes of the runs before. That claim
        # leaves out jobs of limited concurrency with an outcome still unwritten: their
        # lease is held until it is written (a slot due meanwhile would look like an overlap).
        self.backlog = False
        self.refill_at = max(1, concurrency // 4)
        self.stopping = asyncio.Event()
        self.wake_claimer = asyncio.Event()
        self.wake_recorder = asyncio.Event()

    @property
    def capacity(self) -> int:
        """Runs this worker may start now (a run frees its place when its call returns)."""
        return self.concurrency - self.executing

    def request_stop(self) -> None:
        """Stop claiming (and scheduling): the first step of a shutdown."""
        self.stopping.set()
        self.wake_claimer.set()

    def take_pending(self) -> list[Outcome]:
        """The outcomes to write now; `restore_pending` puts them back if the write fails."""
        batch, self.pending = self.pending, []
        return batch

    def restore_pending(self, batch: list[Outcome]) -> None:
        self.pending = batch + self.pending

    def written(self, outcomes: Iterable[Outcome], accepted: Container[int]) -> list[int]:
        """The write of `outcomes` is done: their runs leave the table and their jobs may be
        claimed again. Returns the run ids whose outcome was refused (not in `accepted`: the
        lease was taken over)."""
        refused = []
        for outcome in outcomes:
            name = outcome.lease.job_name
            if name in self.limited:
                self.unwritten[name] -= 1
                if self.unwritten[name] <= 0:
                    del self.unwritten[name]
            if outcome.lease.run_id not in accepted:
                refused.append(outcome.lease.run_id)
            self.active.pop(outcome.lease.run_id, None)
        self.wake_claimer.set()
        return refused
