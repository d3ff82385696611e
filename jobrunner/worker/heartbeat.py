"""The heartbeat service: keeps this worker's leases and acts on what it learns.

One transaction every `heartbeat` (`WorkerPort.heartbeat`): renew all of this worker's leases
and its `last_seen`, take over the leases of dead peers (their runs are recorded `lost`), read
the catalog, and now and then (every `HOUSEKEEPING_EVERY`-th pass) count the queue and retire
removed jobs. Then it cancels the runs whose lease is gone (guarantee 4: a peer took it over,
their outcome would be refused) or whose cancel an operator asked for. It wakes sooner than
`heartbeat` when a peer's lease expires before, so that a dead peer's runs are taken over at
expiry. Each renewal moves the renew deadline of the runs it renewed (`Active.deadline`:
when it was sent plus `renew_deadline`), which the watchdog enforces. `/healthz` reads
`last_beat` to tell a stalled heartbeat loop.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Callable, Collection, Mapping

from jobrunner.logging import get_logger
from jobrunner.records import Renewal, Run, WorkerInfo
from jobrunner.store.ports import WorkerPort
from jobrunner.worker.backoff import Backoff, Offload, offload
from jobrunner.worker.catalog import Catalog
from jobrunner.worker.metrics import Metrics
from jobrunner.worker.runs import RunTable

log = get_logger("jobrunner.worker")
HOUSEKEEPING_EVERY = 5  # heartbeats between checks that need not run every time


class Heartbeat:
    """Renews leases, cancels runs that lost theirs, takes over dead peers' runs."""

    def __init__(
        self,
        store: WorkerPort,
        runs: RunTable,
        catalog: Catalog,
        metrics: Metrics,
        *,
        info: WorkerInfo,
        lease_ttl: float,
        interval: float,
        renew_deadline: float = math.inf,
        db: Offload | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.runs = runs
        self.catalog = catalog
        self.metrics = metrics
        self.info = info  # registered again if the worker row was forgotten
        self.lease_ttl = lease_ttl
        self.interval = interval
        self.renew_deadline = renew_deadline  # seconds a renewal is surely valid once sent
        self.db = db or offload()
        self.monotonic = monotonic
        self.last_beat = monotonic()  # last heartbeat pass, successful or not
        self._beats = 0  # heartbeats so far: slow checks run on every HOUSEKEEPING_EVERY-th
        self._warned_peers = False
        self._unserved_seen: set[str] = set()  # queues already warned about

    async def run(self) -> None:
        backoff = Backoff("heartbeat", self.metrics.db_error, self.monotonic)
        while True:
            delay = await backoff.guard(self.run_once)
            await asyncio.sleep(min(delay, self.interval))

    def _unserved(self, unserved: Mapping[str, list[str]]) -> None:
        """Count the queues no live worker serves, and say so once per queue until served."""
        self.metrics.set_unserved(unserved)
        for queue, jobs in unserved.items():
            if queue not in self._unserved_seen:
                log.warning(
                    "queue served by no live worker: its runs wait", queue=queue, jobs=jobs[:20]
                )
        self._unserved_seen = set(unserved)

    async def run_once(self) -> float:
        """One transaction: renew every lease, reap dead holders' leases, read the catalog.
        Then cancel runs whose lease is gone or whose cancel was asked. Returns the seconds
        until the next pass: `heartbeat`, or sooner when a peer's lease expires before."""
        self.last_beat = sent = self.monotonic()
        checked = set(self.runs.active)  # runs claimed while this pass runs are not judged by it
        self._beats += 1
        housekeeping = self._beats % HOUSEKEEPING_EVERY == 1
        worker_id = self.info.worker_id
        beat = await self.db(
            self.store.heartbeat, worker_id, self.lease_ttl, housekeeping=housekeeping
        )
        renewal = beat.renewal
        self.metrics.set_leases(len(renewal.held))
        self.metrics.set_running(self.runs.executing)
        if beat.queue_depth is not None:
            self.metrics.set_queue_depth(beat.queue_depth)
        if beat.unserved is not None:
            self._unserved(beat.unserved)
        if not renewal.registered:
            await self.db(self.store.register_worker, self.info)
        self._extend(renewal.held, sent + self.renew_deadline)
        self._judge(checked, renewal)
        self._took_over(beat.lost)
        await self.catalog.refresh(beat.catalog)
        if beat.retired:
            log.info("retired jobs no live worker defines", jobs=beat.retired)
        for job, key in beat.retired_schedules:
            log.warning("runtime schedule retired: its job is no longer defined", job=job, key=key)
        if housekeeping and self.store.dialect == "sqlite":
            await self._warn_remote_peers()
        if beat.next_expiry_in is not None and beat.next_expiry_in < self.interval:
            return max(beat.next_expiry_in + 0.05, 0.25)  # reap a dead peer's lease at expiry
        return self.interval

    def _extend(self, held: Collection[int], deadline: float) -> None:
        """The leases `held` were renewed: their runs may run on until `deadline`."""
        active = self.runs.active
        for run_id in held:
            run = active.get(run_id)
            if run is not None and run.deadline < deadline:
                run.deadline = deadline

    def _judge(self, checked: Collection[int], renewal: Renewal) -> None:
        """Cancel the runs (of those `checked`) whose lease is gone or whose cancel was asked."""
        for run_id, active in list(self.runs.active.items()):
            if run_id not in checked or active.task is None or active.task.done():
                continue
            if active.stop_reason:
                continue
            if run_id not in renewal.held:
                log.warning("lease lost: cancelling run", run_id=run_id, job=active.job.name)
                active.stop("lost")
            elif run_id in renewal.cancel_requested:
                log.info("cancel requested: cancelling run", run_id=run_id, job=active.job.name)
                active.stop("cancelled")

    def _took_over(self, lost: list[Run]) -> None:
        for run in lost:
            self.metrics.run_finished(run.job_name, "lost", 0.0)
            log.warning(
                "took over a lost run",
                run_id=run.id,
                job=run.job_name,
                holder=run.worker_id,
                retried=run.attempt < run.max_attempts,
            )
        if lost:
            self.runs.wake_claimer.set()

    async def _warn_remote_peers(self) -> None:
        hosts = {w.hostname for w in await self.db(self.store.list_workers)}
        others = hosts - {socket.gethostname()}
        if others and not self._warned_peers:
            self._warned_peers = True
            log.warning(
                "SQLite is for one host only: workers on other hosts share this file",
                hosts=sorted(others),
            )
