"""The store's ports (`jobrunner.store.ports`), implemented over one SQLAlchemy engine.

Each method picks a transaction and runs the operations of the topic modules in it; no
statement is written here. `WorkerStore` serves the worker, `AdminStore` the CLI (and
everything a client may do), `ClientStore` the sync `Client`; the `AsyncClient` runs the
same operations on an async engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Self, TypeVar, Unpack

import sqlalchemy as sa

from jobrunner.notify import NotifyTarget
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
from jobrunner.store import (
    catalog,
    claim,
    history,
    leases,
    migrate,
    outbox,
    outcomes,
    queue,
    rates,
    redrive,
    schedules,
    slots,
)
from jobrunner.store.direct import driver_errors
from jobrunner.store.engine import create_engine
from jobrunner.store.history import RunFilters
from jobrunner.store.outbox import Pending
from jobrunner.store.params import Signatures
from jobrunner.store.queue import BulkOptions, EnqueueOptions
from jobrunner.store.sql import Op, run_sync
from jobrunner.waits import unserved_queues

if TYPE_CHECKING:
    from jobrunner.store.ports import AdminPort, ClientPort, WorkerPort

T = TypeVar("T")

HOUSEKEEPING = "queue depth, orphaned runs, stale workers, retired jobs"

# The claim and outcome transactions look runs up by index only (see `hot`): begun with
# their settings in one round trip (a simple query of several statements, no parameters).
_BEGIN_INDEX_PLANS = "BEGIN; " + " ".join(
    f"SET LOCAL {setting} TO off;"
    for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort", "enable_hashjoin")
)


def read(engine: sa.Engine, op: Op[T]) -> T:
    """Run `op` on a connection without a transaction of its own (reads; on PostgreSQL in
    autocommit: each statement sees what was committed when it began, as in a READ COMMITTED
    transaction, without its BEGIN and ROLLBACK round trips)."""
    with _autocommit(engine) as conn:
        return run_sync(conn, op)


def write(engine: sa.Engine, op: Op[T]) -> T:
    """Run `op` in one transaction."""
    with engine.begin() as conn:
        return run_sync(conn, op)


def write_one(engine: sa.Engine, op: Op[T]) -> T:
    """Run an operation of one write statement (reads after it only): autocommit on
    PostgreSQL, which spares the BEGIN and COMMIT round trips."""
    if engine.dialect.name == "postgresql":
        with _autocommit(engine) as conn:
            return run_sync(conn, op)
    with engine.begin() as conn:
        return run_sync(conn, op)


@contextmanager
def _autocommit(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection of `engine`; on PostgreSQL in psycopg's autocommit, set on the driver and
    reset before the connection goes back to the pool (SQLAlchemy's isolation-level option
    does the same at a sixth of an enqueue's cost). A connection that cannot be reset is
    invalidated, never pooled in autocommit."""
    with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            yield conn
            return
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.autocommit = True
        try:
            yield conn
        finally:
            try:
                driver.autocommit = False
            except engine.dialect.loaded_dbapi.Error as exc:  # lost, or left mid-transaction
                conn.invalidate(exc)


@contextmanager
def hot(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction of the worker's hot path (claim, outcomes), whose statements look
    runs up by index only, whatever the table's statistics say.

    Statistics lag the queue: autoanalyze runs at most once a minute, so right after a
    burst (a bulk enqueue, thousands of slots at one minute) PostgreSQL believes a
    handful of runs are queued and plans a bitmap scan of the whole backlog plus a sort
    for the claim, and a hash join over the table for the start. Measured with 20,000
    queued runs: 7-30 ms per claim of 200 instead of 0.3 ms. `SET LOCAL` lasts for this
    transaction only (no session state, so PgBouncer's transaction pooling is fine); every
    statement in it has an index path.

    On PostgreSQL the transaction is the driver's: begun with those settings in one round
    trip (psycopg would send its BEGIN alone first), on a connection in autocommit, and
    ended with the driver's commit or rollback.
    """
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            yield conn
        return
    with _autocommit(engine) as conn:
        with driver_errors(conn, _BEGIN_INDEX_PLANS) as driver:
            driver.execute(_BEGIN_INDEX_PLANS)
        try:
            yield conn
        except BaseException:
            with suppress(engine.dialect.loaded_dbapi.Error):  # lost: never pooled (above)
                driver.rollback()
            raise
        with driver_errors(conn, "COMMIT") as driver:
            driver.commit()


class _Store:
    """One database (PostgreSQL or SQLite); `close` disposes the engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> Self:
        return cls(create_engine(url, **engine_kwargs))

    def close(self) -> None:
        self.engine.dispose()

    def now(self) -> datetime:
        return read(self.engine, catalog.clock())

    def schema_status(self) -> migrate.SchemaStatus:
        return migrate.status(self.engine)

    def list_workers(self) -> list[WorkerRow]:
        return read(self.engine, catalog.list_workers())

    def prune(self, *, older_than: timedelta | None, keep_last: int = 0) -> int:
        """Chunk by chunk, each its own short transaction (`history.prune`)."""
        total, since = 0, None
        while True:
            op = history.prune(
                self.dialect,
                older_than=older_than,
                keep_last=keep_last,
                since=since,
                limit=history.PRUNE_CHUNK,
            )
            deleted, since = write(self.engine, op)
            total += deleted
            if deleted < history.PRUNE_CHUNK:
                return total


class ClientStore(_Store):
    """`ClientPort`: enqueue by job name (kwargs checked against the job's published
    parameters), observe and cancel runs."""

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(engine)
        self.signatures = Signatures()

    def enqueue(
        self,
        job_name: str,
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> Run:
        op = queue.enqueue(self.dialect, job_name, kwargs, self.signatures, **options)
        if self.signatures.may_be_unique(job_name):  # its lock must last until the insert
            return write(self.engine, op)
        return write_one(self.engine, op)

    def enqueue_many(
        self,
        job_name: str,
        kwargs_list: Sequence[Mapping[str, Any] | None],
        **options: Unpack[BulkOptions],
    ) -> list[int]:
        op = queue.enqueue_many(self.dialect, job_name, kwargs_list, self.signatures, **options)
        return write(self.engine, op)

    def get_run(self, run_id: int) -> Run:
        return read(self.engine, history.get_run(run_id))

    def list_runs(self, *, limit: int = 50, **filters: Unpack[RunFilters]) -> list[Run]:
        return read(self.engine, history.list_runs(limit=limit, **filters))

    def list_jobs(self) -> list[CatalogEntry]:
        return read(self.engine, catalog.list_jobs())

    def get_job(self, name: str) -> CatalogEntry:
        return read(self.engine, catalog.get_job(name))

    def cancel_run(self, run_id: int) -> Run:
        return write(self.engine, queue.cancel_run(self.dialect, run_id))

    def retry_run(self, run_id: int) -> Run:
        return write(self.engine, redrive.retry_run(self.dialect, run_id))

    def create_schedule(self, job: str, key: str, changes: Mapping[str, Any]) -> ScheduleRow:
        op = schedules.create_schedule(self.dialect, job, key, changes, self.signatures)
        return write(self.engine, op)

    def create_schedules(self, job: str, specs: Sequence[Mapping[str, Any]]) -> int:
        return write(
            self.engine, schedules.create_schedules(self.dialect, job, specs, self.signatures)
        )

    def update_schedule(self, job: str, key: str, changes: Mapping[str, Any]) -> ScheduleRow:
        op = schedules.update_schedule(self.dialect, job, key, changes, self.signatures)
        return write(self.engine, op)

    def set_schedule_paused(self, job: str, key: str, paused: bool) -> ScheduleRow:
        return write(self.engine, schedules.set_schedule_paused(self.dialect, job, key, paused))

    def delete_schedule(self, job: str, key: str) -> ScheduleRow:
        return write(self.engine, schedules.delete_schedule(self.dialect, job, key))

    def get_schedule(self, job: str, key: str) -> ScheduleRow:
        return read(self.engine, schedules.get_schedule(job, key))

    def list_schedules(
        self, job: str | None = None, *, ended: bool = False, limit: int = 100_000
    ) -> list[ScheduleRow]:
        return read(self.engine, schedules.list_schedules(job, ended=ended, limit=limit))


class AdminStore(ClientStore):
    """`AdminPort`: what a client may do, and the schema, the ledger, leases and workers."""

    def upgrade_schema(self, revision: str = "head") -> migrate.SchemaStatus:
        return migrate.upgrade(self.engine, revision)

    def set_paused(self, name: str, paused: bool) -> None:
        write(self.engine, catalog.set_paused(name, paused))

    def run_attempts(self, run_id: int) -> list[Run]:
        return read(self.engine, history.run_attempts(run_id))

    def slot_runs(self, job: str, since: datetime, until: datetime, key: str = "") -> list[Run]:
        return read(self.engine, slots.slot_runs(job, since, until, key))

    def slot_bounds(self, job: str, key: str = "") -> tuple[datetime | None, datetime | None]:
        return read(self.engine, slots.slot_bounds(job, key))

    def has_runs(self, job: str) -> bool:
        return read(self.engine, history.has_runs(job))

    def last_outcomes(self) -> dict[str, Run]:
        return read(self.engine, history.last_outcomes(self.dialect))

    def list_locks(self) -> list[LockRow]:
        return read(self.engine, leases.list_locks())

    def queue_depth(self) -> Mapping[tuple[str, str], int]:
        return read(self.engine, queue.queue_depth())

    def outcome_counts(self, since: datetime) -> dict[str, int]:
        return read(self.engine, history.outcome_counts(since))

    def outbox_status(self) -> list[dict[str, Any]]:
        return read(self.engine, outbox.outbox_status())

    def backfill(
        self, job: str, key: str | None, since: datetime, until: datetime, *, dry_run: bool
    ) -> tuple[list[datetime], int]:
        op = schedules.backfill(self.dialect, job, key, since, until, dry_run)
        return write(self.engine, op)

    def rate_blocked_until(self, job: str, key: str) -> datetime | None:
        return read(self.engine, rates.blocked_until(job, key))


class WorkerStore(_Store):
    """`WorkerPort`: register, record slots, claim, heartbeat, write outcomes. With `notify`
    targets set, the events of outcomes, losses and skips are written to the outbox in the
    transaction that records them."""

    notify: tuple[NotifyTarget, ...] = ()
    expect_success: Mapping[str, float] = {}  # job -> seconds (expect_success_within)

    def prepare_schema(self) -> migrate.SchemaStatus:
        return migrate.init_if_empty(self.engine)

    def register_worker(self, info: WorkerInfo) -> datetime:
        return write(self.engine, catalog.register_worker(self.dialect, info))

    def set_worker_state(self, worker_id: str, state: str) -> None:
        write(self.engine, catalog.set_worker_state(worker_id, state))

    def deregister_worker(self, worker_id: str) -> None:
        write(self.engine, catalog.deregister_worker(self.dialect, worker_id))

    def publish_catalog(self, entries: Sequence[CatalogEntry], worker_id: str) -> None:
        write(self.engine, catalog.publish_catalog(self.dialect, entries, worker_id))

    def catalog_state(self, live_within: float) -> dict[str, tuple[str, bool]]:
        return write(self.engine, catalog.catalog_state(live_within))

    def slot_cursors(self, job_names: Iterable[str]) -> dict[str, datetime]:
        return read(self.engine, slots.slot_cursors(self.dialect, list(job_names)))

    def insert_slots(self, new: Sequence[Slot]) -> int:
        return write(self.engine, _recorded(self.dialect, new, self.notify))

    def next_schedule_fire(self, jobs: Sequence[str]) -> datetime | None:
        return read(self.engine, schedules.next_schedule_fire(self.dialect, jobs))

    def plan_schedules(
        self, jobs: Sequence[str], horizon: datetime, limit: int, plan: schedules.Planner
    ) -> int:
        return write(self.engine, schedules.plan_due(self.dialect, jobs, horizon, limit, plan))

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        policies: Mapping[str, Policy],
        lease_ttl: float,
        ahead: float = 0.0,
    ) -> Claim:
        if limit <= 0 or not policies:
            return Claim()
        op = claim.claim(
            self.dialect,
            worker_id=worker_id,
            limit=limit,
            policies=policies,
            lease_ttl=lease_ttl,
            ahead=ahead,
        )
        if self.notify:
            op = _notified_claim(self.dialect, op, self.notify)
        with hot(self.engine) as conn:
            return run_sync(conn, op)

    def heartbeat(self, worker_id: str, lease_ttl: float, *, housekeeping: bool) -> Heartbeat:
        op = _heartbeat(self.dialect, worker_id, lease_ttl, housekeeping, self)
        return write(self.engine, op)

    def finish(self, worker_id: str, done: Sequence[Outcome]) -> set[int]:
        if not done:
            return set()
        op = outcomes.finish(self.dialect, worker_id, done)
        if self.notify:
            op = _notified_finish(self.dialect, op, done, self.notify)
        with hot(self.engine) as conn:
            return run_sync(conn, op)

    def reap(self, *, lease_ttl: float, orphans: bool = True) -> list[Run]:
        return write(self.engine, _reaped(self.dialect, lease_ttl, orphans, self.notify))

    def claim_events(self, targets: Sequence[str], limit: int, lease: float) -> list[Pending]:
        return write(self.engine, outbox.claim_events(self.dialect, targets, limit, lease))

    def events_delivered(self, ids: Sequence[int]) -> None:
        write(self.engine, outbox.delivered(ids))

    def event_retry(self, event: int, error: str, delay: float) -> None:
        write(self.engine, outbox.retry_later(event, error, delay))

    def drop_expired_events(self, keep: float) -> list[tuple[str, str, int]]:
        return write(self.engine, outbox.drop_expired(keep))


def _recorded(dialect: str, new: Sequence[Slot], notify: Sequence[NotifyTarget]) -> Op[int]:
    inserted = yield from slots.insert_slots(dialect, new)
    yield from outbox.after_slots(dialect, notify, new)
    return inserted


def _notified_claim(dialect: str, op: Op[Claim], notify: Sequence[NotifyTarget]) -> Op[Claim]:
    result = yield from op
    yield from outbox.after_skips(dialect, notify, result.skipped)
    return result


def _notified_finish(
    dialect: str, op: Op[set[int]], done: Sequence[Outcome], notify: Sequence[NotifyTarget]
) -> Op[set[int]]:
    written = yield from op
    yield from outbox.after_finish(dialect, notify, done, written)
    return written


def _reaped(
    dialect: str, lease_ttl: float, orphans: bool, notify: Sequence[NotifyTarget]
) -> Op[list[Run]]:
    lost = yield from outcomes.reap(dialect, lease_ttl=lease_ttl, orphans=orphans)
    yield from outbox.after_reap(dialect, notify, lost)
    return lost


def _heartbeat(
    dialect: str,
    worker_id: str,
    lease_ttl: float,
    housekeeping: bool,
    store: WorkerStore | None = None,
) -> Op[Heartbeat]:
    """A worker's periodic pass in one transaction: renew its leases, take over expired
    ones and read the catalog. With `housekeeping` also count the queue, record orphaned
    runs lost, forget stale workers and retire jobs no live worker defines: checks that
    need not run on every heartbeat."""
    renewal = yield from leases.renew(worker_id, lease_ttl)
    notify = store.notify if store is not None else ()
    lost = yield from _reaped(dialect, lease_ttl, housekeeping, notify)
    state = yield from catalog.catalog_state(lease_ttl)
    depth = (yield from queue.queue_depth()) if housekeeping else None
    retired: list[str] = []
    ended: list[tuple[str, str]] = []
    unserved = None
    if housekeeping:
        yield from catalog.forget_workers(lease_ttl)
        if store is not None:
            yield from outbox.check_overdue(dialect, notify, store.expect_success)
        retired = yield from catalog.retire_jobs(lease_ttl)
        ended = yield from schedules.retire_schedules(retired)
        queues, live = yield from catalog.served_state(lease_ttl)
        unserved = unserved_queues(queues, live)
    return Heartbeat(
        renewal=renewal,
        lost=lost,
        catalog=state,
        queue_depth=depth,
        unserved=unserved,
        retired=retired,
        retired_schedules=ended,
        next_expiry_in=(yield from leases.next_expiry_in(worker_id)),
    )


if TYPE_CHECKING:  # mypy holds each implementation to its port

    def _conforms(
        worker: WorkerStore, admin: AdminStore, client: ClientStore
    ) -> tuple[WorkerPort, AdminPort, ClientPort]:
        return worker, admin, client
