"""The catalog as this worker sees it: which job definitions the database holds, and so which
jobs this worker schedules (rolling deploys).

Every worker publishes its definitions at start (`jobrunner_jobs`). During a rolling deploy
old and new workers run side by side with different definitions of a job: only workers whose
definition matches the catalog's (the most recently started worker's) record its slots, so a
changed schedule does not fire twice. The heartbeat reads the catalog on every pass and hands
it to `refresh`; the scheduler asks `owns` before recording a job's slots.
"""

from __future__ import annotations

from collections.abc import Iterable

from jobrunner.config import JobConfig
from jobrunner.logging import get_logger
from jobrunner.records import catalog_entries
from jobrunner.store.ports import WorkerPort
from jobrunner.worker.backoff import Offload, offload

log = get_logger("jobrunner.worker")


class Catalog:
    """The catalog's definition hash of each job, refreshed by the heartbeat."""

    def __init__(
        self,
        jobs: Iterable[JobConfig],
        store: WorkerPort,
        *,
        worker_id: str,
        lease_ttl: float,
        db: Offload | None = None,
    ) -> None:
        self.jobs = {j.name: j for j in jobs}
        self.store = store
        self.worker_id = worker_id
        self.lease_ttl = lease_ttl  # a publisher not seen within it is gone
        self.db = db or offload()
        self.hashes: dict[str, str] = {}
        self._warned: set[str] = set()

    async def publish(self) -> None:
        """Publish this worker's definitions (at start: this worker is now the newest)."""
        await self.db(
            self.store.publish_catalog, catalog_entries(self.jobs.values()), self.worker_id
        )

    def owns(self, name: str) -> bool:
        """Rolling deploys: a job's slots are recorded only by workers whose definition of it
        matches the catalog's, which holds the most recently started worker's definition."""
        mine = self.jobs[name].definition_hash
        theirs = self.hashes.get(name, mine)
        if theirs == mine:
            self._warned.discard(name)
            return True
        if name not in self._warned:
            self._warned.add(name)
            log.warning(
                "job definition differs from the catalog: a newer worker schedules it",
                job=name,
                mine=mine,
                catalog=theirs,
            )
        return False

    async def refresh(self, state: dict[str, tuple[str, bool]] | None = None) -> None:
        """Take in the catalog's definitions. Where it holds another definition of one of our
        jobs whose publisher is gone (a rolled-back deploy), publish ours so the job keeps a
        schedule."""
        if state is None:
            state = await self.db(self.store.catalog_state, self.lease_ttl)
        stale = [
            job
            for name, job in self.jobs.items()
            if name in state and state[name][0] != job.definition_hash and not state[name][1]
        ]
        if stale:  # definitions are built only for these, not on every heartbeat
            orphaned = catalog_entries(stale)
            await self.db(self.store.publish_catalog, orphaned, self.worker_id)
            log.info(
                "republished definitions whose publisher is gone", jobs=[e.name for e in orphaned]
            )
            state = await self.db(self.store.catalog_state, self.lease_ttl)
        self.hashes = {name: h for name, (h, _alive) in state.items()}
