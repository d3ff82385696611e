"""The recorder service: writes the outcomes of finished runs, many in one transaction.

Runs that finish close together leave their outcomes in the run table's pending list; the
recorder, woken by the first, writes all that are there in one `WorkerPort.finish` (fenced:
an outcome whose lease was taken over is refused) and so releases their leases. The runs then
leave the run table, and the claimer is woken: their jobs may be claimed again. On a database
error the outcomes go back to the front of the list and are written again after the backoff;
the supervisor flushes once more at shutdown. One write at a time: a flush waits for the write
in flight, so when it returns every outcome taken so far is in the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from jobrunner.logging import get_logger
from jobrunner.store.ports import WorkerPort
from jobrunner.worker.backoff import Backoff, Offload, offload
from jobrunner.worker.metrics import Metrics
from jobrunner.worker.runs import RunTable

log = get_logger("jobrunner.worker")


class Recorder:
    """Writes the run table's pending outcomes."""

    def __init__(
        self,
        store: WorkerPort,
        runs: RunTable,
        metrics: Metrics,
        *,
        worker_id: str,
        db: Offload | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.runs = runs
        self.metrics = metrics
        self.worker_id = worker_id
        self.db = db or offload()
        self.monotonic = monotonic
        self._writing = asyncio.Lock()

    async def run(self) -> None:
        backoff = Backoff("recorder", self.metrics.db_error, self.monotonic)
        runs = self.runs
        while True:
            await runs.wake_recorder.wait()
            runs.wake_recorder.clear()
            while runs.pending:
                delay = await backoff.guard(self.run_once)
                if delay:  # a database error: back off, then write them again
                    await asyncio.sleep(delay)

    async def run_once(self) -> float:
        """Write pending outcomes in one transaction; frees their capacity. Returns 0: the
        recorder waits to be woken, not for a time."""
        runs = self.runs
        async with self._writing:
            batch = runs.take_pending()
            if not batch:
                return 0.0
            try:
                written = await self.db(self.store.finish, self.worker_id, batch)
            except BaseException:
                runs.restore_pending(batch)
                raise
        for run_id in runs.written(batch, written):
            log.warning("outcome refused: lease was taken over", run_id=run_id)
        return 0.0
