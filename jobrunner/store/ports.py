"""What each consumer of the store may call: one Protocol per consumer.

- `WorkerPort`: the worker daemon (register, schedule slots, claim, heartbeat, finish).
- `AdminPort`: admin tools (the CLI): the catalog, run history, leases, workers, pruning,
  the schema.
- `ClientPort`: web apps (`jobrunner.Client`): enqueue by job name and observe.

`jobrunner.store.access` implements each over one engine, running the operations of the topic
modules (`claim`, `leases`, `slots`, `catalog`, `history`, `queue`), where every statement
lives. Each method is one transaction and says what it guarantees; "now" is always the
database's clock. Consumers import this module only for types: code that takes a port
is tested with the real implementation on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, Unpack

if TYPE_CHECKING:
    from jobrunner.records import (
        CatalogEntry,
        Claim,
        Heartbeat,
        LockRow,
        Outcome,
        Policy,
        Run,
        ScheduleRow,
        Slot,
        WorkerInfo,
        WorkerRow,
    )
    from jobrunner.store.history import RunFilters
    from jobrunner.store.migrate import SchemaStatus
    from jobrunner.store.outbox import Pending
    from jobrunner.store.queue import BulkOptions, EnqueueOptions
    from jobrunner.store.schedules import Planner


class _Common(Protocol):
    dialect: str

    def now(self) -> datetime:
        """The database's clock (UTC)."""
        ...

    def schema_status(self) -> SchemaStatus:
        """The schema's revision against the one this jobrunner needs."""
        ...

    def list_workers(self) -> list[WorkerRow]:
        """Every registered worker, oldest first (stale ones until they are forgotten)."""
        ...

    def prune(self, *, older_than: timedelta | None, keep_last: int = 0) -> int:
        """Delete finished runs older than `older_than`, keeping the newest `keep_last` per
        job; returns how many were deleted."""
        ...

    def close(self) -> None:
        """Dispose the engine (if this store created it)."""
        ...


class WorkerPort(_Common, Protocol):
    """What a worker needs."""

    def prepare_schema(self) -> SchemaStatus:
        """Create the schema in an empty database (under a lock: replicas starting together
        do not race); refuse a schema that is behind (SchemaOutOfDate)."""
        ...

    def register_worker(self, info: WorkerInfo) -> datetime: ...

    def set_worker_state(self, worker_id: str, state: str) -> None: ...

    def deregister_worker(self, worker_id: str) -> None: ...

    def publish_catalog(self, entries: Sequence[CatalogEntry], worker_id: str) -> None: ...

    def catalog_state(self, live_within: float) -> dict[str, tuple[str, bool]]: ...

    def slot_cursors(self, job_names: Iterable[str]) -> dict[str, datetime]: ...

    def insert_slots(self, slots: Sequence[Slot]) -> int: ...

    def next_schedule_fire(self, jobs: Sequence[str]) -> datetime | None:
        """The earliest next fire time of a live runtime schedule of `jobs`."""
        ...

    def plan_schedules(
        self, jobs: Sequence[str], horizon: datetime, limit: int, plan: Planner
    ) -> int:
        """Claim up to `limit` runtime schedules of `jobs` due by `horizon` (peers pass
        them over), record the slots `plan` gives and move them on; how many were planned."""
        ...

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        policies: Mapping[str, Policy],
        lease_ttl: float,
        ahead: float = 0.0,
    ) -> Claim: ...

    def heartbeat(self, worker_id: str, lease_ttl: float, *, housekeeping: bool) -> Heartbeat: ...

    def finish(self, worker_id: str, outcomes: Sequence[Outcome]) -> set[int]: ...

    def reap(self, *, lease_ttl: float, orphans: bool = True) -> list[Run]: ...

    def claim_events(self, targets: Sequence[str], limit: int, lease: float) -> list[Pending]:
        """Up to `limit` due outbox events of `targets`, claimed for `lease` seconds."""
        ...

    def events_delivered(self, ids: Sequence[int]) -> None: ...

    def event_retry(self, event: int, error: str, delay: float) -> None: ...

    def drop_expired_events(self, keep: float) -> list[tuple[str, str, int]]:
        """Record events pending longer than `keep` seconds dropped; (target, id, attempts)."""
        ...


class ClientPort(Protocol):
    """What a web app's client needs: enqueue by name, observe, cancel."""

    def enqueue(
        self,
        job_name: str,
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> Run: ...

    def enqueue_many(
        self,
        job_name: str,
        kwargs_list: Sequence[Mapping[str, Any] | None],
        **options: Unpack[BulkOptions],
    ) -> list[int]: ...

    def get_run(self, run_id: int) -> Run: ...

    def list_runs(self, *, limit: int = 50, **filters: Unpack[RunFilters]) -> list[Run]: ...

    def list_jobs(self) -> list[CatalogEntry]: ...

    def get_job(self, name: str) -> CatalogEntry: ...

    def cancel_run(self, run_id: int) -> Run: ...

    def retry_run(self, run_id: int) -> Run:
        """Queue a run that ended without success again (RunNotRetryable otherwise)."""
        ...

    def create_schedule(self, job: str, key: str, changes: Mapping[str, Any]) -> ScheduleRow:
        """A runtime schedule of `job` (`runtime.ScheduleChanges`); see `store.schedules`."""
        ...

    def create_schedules(self, job: str, specs: Sequence[Mapping[str, Any]]) -> int:
        """Many schedules of `job`, all or none (each spec with `key` and `cron`)."""
        ...

    def update_schedule(self, job: str, key: str, changes: Mapping[str, Any]) -> ScheduleRow: ...

    def set_schedule_paused(self, job: str, key: str, paused: bool) -> ScheduleRow: ...

    def delete_schedule(self, job: str, key: str) -> ScheduleRow: ...

    def get_schedule(self, job: str, key: str) -> ScheduleRow: ...

    def list_schedules(
        self, job: str | None = None, *, ended: bool = False
    ) -> list[ScheduleRow]: ...


class AdminPort(_Common, ClientPort, Protocol):
    """What admin tools need: everything a client may do, and the ledger, leases, workers."""

    def upgrade_schema(self, revision: str = "head") -> SchemaStatus: ...

    def set_paused(self, name: str, paused: bool) -> None: ...

    def run_attempts(self, run_id: int) -> list[Run]: ...

    def slot_runs(self, job: str, since: datetime, until: datetime, key: str = "") -> list[Run]:
        """The runs of the job's slots (of its runtime schedule `key`) in [since, until]."""
        ...

    def slot_bounds(self, job: str, key: str = "") -> tuple[datetime | None, datetime | None]: ...

    def has_runs(self, job: str) -> bool: ...

    def last_outcomes(self) -> dict[str, Run]: ...

    def list_locks(self) -> list[LockRow]: ...

    def queue_depth(self) -> Mapping[tuple[str, str], int]:
        """Due queued runs by (queue, priority class)."""
        ...

    def outcome_counts(self, since: datetime) -> dict[str, int]:
        """Runs enqueued since `since`, by status."""
        ...

    def outbox_status(self) -> list[dict[str, Any]]:
        """The outbox per target and status (`jobrunner notify status`)."""
        ...

    def backfill(
        self, job: str, key: str | None, since: datetime, until: datetime, *, dry_run: bool
    ) -> tuple[list[datetime], int]:
        """Queue the slots of [since, until] that have no row (of the TOML schedule, or of
        the runtime schedule `key`); returns them and how many had a row already."""
        ...

    def rate_blocked_until(self, job: str, key: str) -> datetime | None:
        """While the rate window of (job, key) is full: when it admits a start again."""
        ...
