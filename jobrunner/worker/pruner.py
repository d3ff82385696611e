"""The pruner service: deletes old run history per `[history]`.

Once every `prune_interval` (the first pass at a random time within the first minute, so that
replicas started together do not prune together): finished runs older than `retention` are
deleted, keeping the newest `keep_last` per job. Ages are judged by the database's clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from jobrunner.config import HistoryConfig
from jobrunner.logging import get_logger
from jobrunner.store.ports import WorkerPort
from jobrunner.worker.backoff import Backoff, Offload, offload
from jobrunner.worker.metrics import Metrics

log = get_logger("jobrunner.worker")
FIRST_WITHIN = 60.0  # seconds: the first pass comes at a random time within them


class Pruner:
    """Deletes finished runs past their retention."""

    def __init__(
        self,
        history: HistoryConfig,
        store: WorkerPort,
        metrics: Metrics,
        *,
        db: Offload | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.history = history
        self.store = store
        self.metrics = metrics
        self.db = db or offload()
        self.monotonic = monotonic
        self.rand = rand

    async def run(self) -> None:
        backoff = Backoff("pruner", self.metrics.db_error, self.monotonic)
        await asyncio.sleep(self.rand(0, FIRST_WITHIN))
        while True:
            delay = await backoff.guard(self.run_once)
            await asyncio.sleep(delay)

    async def run_once(self) -> float:
        """Delete the runs past retention; returns `prune_interval` in seconds."""
        history = self.history
        deleted = await self.db(
            self.store.prune, older_than=history.retention, keep_last=history.keep_last
        )
        if deleted:
            log.info("pruned run history", deleted=deleted)
        return history.prune_interval.total_seconds()
