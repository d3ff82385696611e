"""The claimer service: claims due queued runs up to the free places and launches them.

One claim is one store call (`WorkerPort.claim`): it takes leases for the runs it may start,
records the slots it skips (overlap, pause, misfire) and says when the next run is due. The
claimer then hands each started run to the `Runner` and sleeps until `CLAIM_AHEAD` before the
next due run, so that the claim is done by then and the run begins on time (`Active.begin_at`).
Enqueues (LISTEN/NOTIFY), recorded slots, written outcomes and freed places wake it earlier;
the poll interval is only a fallback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from jobrunner.logging import get_logger
from jobrunner.records import Claim, Policy, Run
from jobrunner.store.ports import WorkerPort
from jobrunner.worker.backoff import Backoff, Offload, offload, sleep_or
from jobrunner.worker.metrics import Metrics
from jobrunner.worker.runner import Runner, iso
from jobrunner.worker.runs import RunTable

log = get_logger("jobrunner.worker")
CLAIM_AHEAD = 0.05  # seconds: runs due this soon are claimed now and begin at their time
LISTENING_POLL = 60.0  # the least poll interval while LISTEN/NOTIFY wakes the claimer


class Claimer:
    """Claims runs for the free places of the run table and launches them."""

    def __init__(
        self,
        policies: Mapping[str, Policy],
        store: WorkerPort,
        runs: RunTable,
        runner: Runner,
        metrics: Metrics,
        *,
        worker_id: str,
        lease_ttl: float,
        poll_interval: float,
        db: Offload | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policies = policies
        self.store = store
        self.runs = runs
        self.runner = runner
        self.metrics = metrics
        self.worker_id = worker_id
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self.listening = False  # set when LISTEN/NOTIFY wakes the claimer on enqueues
        self.db = db or offload()
        self.monotonic = monotonic  # the runner's too: claimed-ahead runs begin by it

    async def run(self) -> None:
        backoff = Backoff("claimer", self.metrics.db_error, self.monotonic)
        runs = self.runs
        while not runs.stopping.is_set():
            runs.wake_claimer.clear()
            delay = await backoff.guard(self.run_once)
            if delay > 0:
                await sleep_or(runs.wake_claimer, delay)

    def poll(self) -> float:
        """Seconds between claims when nothing wakes the claimer."""
        # With LISTEN/NOTIFY wake-ups the poll is only a fallback: keep idle load low.
        return max(self.poll_interval, LISTENING_POLL) if self.listening else self.poll_interval

    def claimable(self) -> Mapping[str, Policy]:
        """The jobs a claim may take runs of: all but limited jobs with an unwritten outcome."""
        unwritten = self.runs.unwritten
        if not unwritten:
            return self.policies
        return {n: pol for n, pol in self.policies.items() if n not in unwritten}

    async def run_once(self) -> float:
        """Claim due runs up to free capacity and start them.

        Runs due within `CLAIM_AHEAD` are claimed too and begin at their time. Returns 0 when
        there may be more to claim at once, else seconds to sleep: until `CLAIM_AHEAD` before
        the earliest future queued run, at most the poll interval (enqueues and finished runs
        wake the claimer earlier).
        """
        poll = self.poll()
        runs = self.runs
        free = runs.capacity
        if free <= 0 or runs.stopping.is_set():
            return poll
        sent = self.monotonic()
        claim = await self.db(
            self.store.claim,
            worker_id=self.worker_id,
            limit=free,
            policies=self.claimable(),
            lease_ttl=self.lease_ttl,
            ahead=CLAIM_AHEAD,
        )
        returned = self.monotonic()
        for run, reason in claim.skipped:
            self._skipped(run, reason)
        launch = self.runner.launch
        for claimed in claim.started:
            launch(claimed, claim.clock, sent, returned)
        got = len(claim.started) + len(claim.skipped)
        runs.backlog = got >= free
        if runs.backlog and runs.capacity > 0:
            return 0.0
        return self._until_due(claim, poll, sent, returned)

    def _skipped(self, run: Run, reason: str) -> None:
        self.metrics.slot_skipped(run.job_name, reason)
        log.info(
            "slot skipped",
            job=run.job_name,
            scheduled_for=iso(run.scheduled_for),
            reason=reason,
            run_id=run.id,
        )

    def _until_due(self, claim: Claim, poll: float, sent: float, returned: float) -> float:
        """Seconds from now until the claim's `next_due`, at most `poll`."""
        if claim.next_due is None:
            return poll
        if claim.clock is not None:  # read late in the claim: counted from its return
            until = (claim.next_due - claim.clock).total_seconds() - (self.monotonic() - returned)
        elif claim.now is not None:  # when the claim's transaction began, after it was sent
            until = (claim.next_due - claim.now).total_seconds() - (self.monotonic() - sent)
        else:
            return poll
        return min(max(until, 0.001), poll)
