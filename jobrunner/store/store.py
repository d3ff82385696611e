"""Every statement jobrunner runs, behind one class.

The worker, the CLI and the clients call these methods and never build SQL. Each method runs
in its own transaction and says what it guarantees. "now" is always the database's clock
(`db_now`), never the host's.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from jobrunner.errors import JobNotFound
from jobrunner.records import (
    CatalogEntry,
    Claim,
    ClaimedRun,
    Heartbeat,
    Lease,
    LockRow,
    Outcome,
    Policy,
    Renewal,
    Run,
    Slot,
    WorkerInfo,
    WorkerRow,
)
from jobrunner.store import migrate, queries
from jobrunner.store.engine import create_engine, db_now
from jobrunner.store.tables import (
    FINAL_STATUSES,
    SCHEDULED,
    SLOT_KEY,
    PgArray,
    UTCDateTime,
    job_locks,
    job_runs,
    jobrunner_jobs,
    jobrunner_workers,
)

NOTIFY_CHANNEL = queries.NOTIFY_CHANNEL
# The claim and outcome transactions look runs up by index only (see `_queue_tx`).
_INDEX_PLANS = sa.select(
    *(
        sa.func.set_config(setting, "off", True)
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort", "enable_hashjoin")
    )
)
FORGET_WORKERS_AFTER = 3600.0  # seconds a dead worker's row stays visible as stale


class Store:
    """Data access for one database (PostgreSQL or SQLite)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> Store:
        return cls(create_engine(url, **engine_kwargs))

    def close(self) -> None:
        self.engine.dispose()

    def prepare_schema(self) -> migrate.SchemaStatus:
        return migrate.init_if_empty(self.engine)

    def schema_status(self) -> migrate.SchemaStatus:
        return migrate.status(self.engine)

    def upgrade_schema(self, revision: str = "head") -> migrate.SchemaStatus:
        return migrate.upgrade(self.engine, revision)

    # -- clock ---------------------------------------------------------------------------

    def now(self) -> datetime:
        """The database's clock (UTC)."""
        with self.engine.connect() as conn:
            value: datetime = conn.execute(sa.select(db_now())).scalar_one()
            return value

    # -- workers and catalog --------------------------------------------------------------

    def register_worker(self, info: WorkerInfo) -> datetime:
        """Insert or refresh this worker's row (started_at and last_seen = now); returns now."""
        with self.engine.begin() as conn:
            now: datetime = conn.execute(sa.select(db_now())).scalar_one()
            values = {
                "hostname": info.hostname,
                "pid": info.pid,
                "version": info.version,
                "config_hash": info.config_hash,
                "jobs": dict(info.jobs),
                "state": "running",
                "last_seen": now,
            }
            stmt = self._insert(jobrunner_workers).values(
                worker_id=info.worker_id, started_at=now, **values
            )
            conn.execute(stmt.on_conflict_do_update(index_elements=["worker_id"], set_=values))
            return now

    def set_worker_state(self, worker_id: str, state: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                jobrunner_workers.update()
                .where(jobrunner_workers.c.worker_id == worker_id)
                .values(state=state)
            )

    def deregister_worker(self, worker_id: str) -> None:
        """Release every lease the worker holds and delete its row, in one transaction."""
        with self.engine.begin() as conn:
            released = conn.execute(_release(job_locks.c.worker_id == worker_id)).rowcount
            conn.execute(
                jobrunner_workers.delete().where(jobrunner_workers.c.worker_id == worker_id)
            )
            if released:  # runs waiting for those leases can start on a peer now
                self._notify(conn, "released")

    def list_workers(self) -> list[WorkerRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(jobrunner_workers).order_by(jobrunner_workers.c.started_at)
            )
            return [WorkerRow(**r._mapping) for r in rows]

    def publish_catalog(self, entries: Sequence[CatalogEntry], worker_id: str) -> None:
        """Upsert each job's definition (the newest publisher wins); `paused` is kept as is."""
        if not entries:
            return
        with self.engine.begin() as conn:
            stmt = self._insert(jobrunner_jobs).values(
                name=sa.bindparam("n"),
                cron=sa.bindparam("c"),
                timezone=sa.bindparam("tz"),
                config_hash=sa.bindparam("h"),
                definition=sa.bindparam("d", type_=sa.JSON()),
                published_by=worker_id,
                updated_at=db_now(),
            )
            update = {
                c: stmt.excluded[c]
                for c in ("cron", "timezone", "config_hash", "definition", "published_by")
            }
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"], set_={**update, "updated_at": db_now()}
            )
            # executemany: any number of jobs (a single VALUES list caps at 65535 parameters)
            rows = [
                {
                    "n": e.name,
                    "c": e.cron,
                    "tz": e.timezone,
                    "h": e.config_hash,
                    "d": dict(e.definition),
                }
                for e in entries
            ]
            conn.execute(stmt, rows)

    def catalog_state(
        self, live_within: float, *, conn: sa.Connection | None = None
    ) -> dict[str, tuple[str, bool]]:
        """Each catalogued job's definition hash, and whether the worker that published it
        is still live (seen within `live_within` seconds)."""
        live = (
            sa.select(jobrunner_workers.c.worker_id)
            .where(
                jobrunner_workers.c.worker_id == jobrunner_jobs.c.published_by,
                jobrunner_workers.c.last_seen >= db_now(-live_within),
            )
            .exists()
        )
        with self._tx(conn) as conn:
            rows = conn.execute(
                sa.select(jobrunner_jobs.c.name, jobrunner_jobs.c.config_hash, live)
            )
            return {name: (config_hash, bool(alive)) for name, config_hash, alive in rows}

    def retire_jobs(self, live_within: float, *, conn: sa.Connection | None = None) -> list[str]:
        """Remove catalog entries that no live worker defines any more.

        A worker is live if it was seen within `live_within` seconds. Queued runs of a retired
        job are recorded `cancelled` (reason `job removed`), so none waits forever. Returns the
        retired job names.
        """
        with self._tx(conn) as conn:
            live = conn.execute(
                sa.select(jobrunner_workers.c.jobs).where(
                    jobrunner_workers.c.last_seen >= db_now(-live_within)
                )
            ).scalars()
            defined = {name for jobs in live for name in jobs}
            if not defined:
                return []  # no live worker: nothing can be decided
            gone = list(
                conn.execute(
                    jobrunner_jobs.delete()
                    .where(jobrunner_jobs.c.name.not_in(defined))
                    .returning(jobrunner_jobs.c.name)
                ).scalars()
            )
            if gone:
                conn.execute(
                    job_runs.update()
                    .where(job_runs.c.job_name.in_(gone), job_runs.c.status == "queued")
                    .values(status="cancelled", reason="job removed", finished_at=db_now())
                )
            return gone

    def list_jobs(self) -> list[CatalogEntry]:
        """The catalog, by name."""
        with self.engine.connect() as conn:
            return queries.run_sync(conn, queries.list_jobs())

    def get_job(self, name: str) -> CatalogEntry:
        """One catalog entry (JobNotFound if there is none)."""
        with self.engine.connect() as conn:
            return queries.run_sync(conn, queries.get_job(name))

    def set_paused(self, name: str, paused: bool) -> None:
        """Pause or resume a job for every replica (they read the flag when they claim)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                jobrunner_jobs.update().where(jobrunner_jobs.c.name == name).values(paused=paused)
            )
        if result.rowcount == 0:
            raise JobNotFound(f"no job named {name!r} in the catalog")

    # -- slots and queued runs ------------------------------------------------------------

    def slot_cursors(self, job_names: Iterable[str]) -> dict[str, datetime]:
        """The newest recorded slot of each named job that has one."""
        names = list(job_names)
        if not names:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(job_runs.c.job_name, sa.func.max(job_runs.c.scheduled_for))
                .where(
                    _in(self.dialect, job_runs.c.job_name, "names"),
                    job_runs.c.scheduled_for.is_not(None),
                )
                .group_by(job_runs.c.job_name),
                {"names": names},
            )
            return {row[0]: row[1] for row in rows}

    def insert_slots(self, slots: Sequence[Slot]) -> int:
        """Record scheduled slots in one statement; returns how many were new.

        Idempotent: the unique key (job_name, scheduled_for, attempt) makes a slot that any
        replica already recorded a no-op (`ON CONFLICT DO NOTHING`), so every replica may try.
        """
        if not slots:
            return 0
        stmt = _slots_statement(self.dialect)
        rows = [
            {
                "j": s.job_name,
                "sf": s.scheduled_for,
                "ra": s.run_at,
                "st": s.status,
                "why": s.reason,
                "ma": s.max_attempts,
            }
            for s in slots
        ]
        with self.engine.begin() as conn:
            inserted = len(conn.execute(stmt, _rows(self.dialect, rows)).all())
            if any(s.status == "queued" for s in slots):
                self._notify(conn, "slots")
            return inserted

    def enqueue(
        self,
        job_name: str,
        kwargs: Mapping[str, Any] | None = None,
        *,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
    ) -> Run:
        """Queue a one-off run of a catalogued job; returns the run.

        Refuses a job missing from the catalog (JobNotFound) and kwargs that are not a JSON
        object (InvalidArguments). With an idempotency key, a repeat returns the first run.
        Nothing the caller sends is imported or evaluated. Wakes listening workers (NOTIFY).
        """
        op = queries.enqueue(
            self.dialect,
            job_name,
            kwargs,
            run_at=run_at,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
        )
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":  # one statement: no BEGIN/COMMIT round trips
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                return queries.run_sync(conn, op)
            with conn.begin():
                return queries.run_sync(conn, op)

    def enqueue_many(
        self,
        job_name: str,
        kwargs_list: Sequence[Mapping[str, Any] | None],
        *,
        run_at: datetime | None = None,
        correlation_id: str | None = None,
    ) -> list[int]:
        """Queue a run of a catalogued job per element of `kwargs_list` in one statement
        (all or none); returns the run ids in order. Wakes listening workers."""
        op = queries.enqueue_many(
            self.dialect, job_name, kwargs_list, run_at=run_at, correlation_id=correlation_id
        )
        with self.engine.begin() as conn:
            return queries.run_sync(conn, op)

    def _notify(self, conn: sa.Connection, payload: str) -> None:
        stmt = queries.notify(self.dialect, payload)
        if stmt is not None:
            conn.execute(stmt)

    # -- claiming -------------------------------------------------------------------------

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        policies: Mapping[str, Policy],
        lease_ttl: float,
        ahead: float = 0.0,
    ) -> Claim:
        """Start up to `limit` due queued runs of the given jobs on this worker.

        One transaction: due runs (`run_at <= now`) are locked with `FOR UPDATE SKIP LOCKED`
        on PostgreSQL (SQLite serialises writers), oldest first. Each gets a lease in
        `job_locks` (fence incremented) if its job has a free lease slot; the insert of a lease
        only succeeds on a free row, so two workers can never hold the same one. Scheduled
        slots that cannot start are recorded `skipped` with the reason (`paused`, `misfired`,
        `overlap`) or, with overlap `replace`, take the lease from the running run, which is
        recorded `cancelled` (reason `replaced`). Manual runs, retries and catch-up slots
        (reason `catch-up`) of a job at capacity stay queued and run after the holder. Runs of
        jobs not in `policies` are never touched.

        With `ahead` (seconds), runs due within that time are claimed too, so that the claim
        is done when they are due: each is recorded running from its `run_at`, and the worker
        begins it then. Such a run is only taken if its job has a free lease slot now; every
        other decision (skip, replace, wait) is left to a claim at its due time.
        `Claim.next_due` says when to claim again.
        """
        if limit <= 0 or not policies:
            return Claim()
        with self._queue_tx() as conn:
            held = _held_leases(conn)
            saturated = [  # by the held leases: far fewer than the jobs, with many jobs
                name
                for name, slots in held.items()
                if (pol := policies.get(name)) is not None
                and (cap := pol.capacity) is not None
                and len(slots) >= cap
            ]
            candidates, now = _candidates(conn, limit, list(policies), saturated, ahead)
            claim = Claim(now=now)
            if candidates and now is not None:
                claim = self._decide(conn, now, worker_id, candidates, policies, held, lease_ttl)
            if len(candidates) < limit:
                later, db_time, clock = _next_due(conn, list(policies))
                # The latest clock reading: runs claimed ahead wait (and the claimer sleeps) less.
                clock = max(clock, claim.clock) if claim.clock is not None else clock
                now = claim.now or db_time
                claim = dataclasses.replace(claim, now=now, clock=clock)
                if later is not None:
                    # A run due within `ahead` is still queued: a peer's claim holds it (or
                    # held it back); claim at its time. Else claim `ahead` before it.
                    if later > now + timedelta(seconds=ahead):
                        later -= timedelta(seconds=ahead)
                    if claim.next_due is None or later < claim.next_due:
                        claim = dataclasses.replace(claim, next_due=later)
            return claim

    def _decide(
        self,
        conn: sa.Connection,
        now: datetime,
        worker_id: str,
        candidates: list[tuple[Run, bool]],
        policies: Mapping[str, Policy],
        held: dict[str, dict[int, Lease]],
        lease_ttl: float,
    ) -> Claim:
        wanted: list[tuple[Run, int]] = []
        skipped: list[tuple[Run, str]] = []
        replace: list[tuple[Run, Lease]] = []
        slots: dict[str, _Slots] = {}
        waiting = 0

        def lanes_of(name: str, pol: Policy) -> _Slots:
            lanes = slots.get(name)
            if lanes is None:
                lanes = slots[name] = _Slots(held.get(name, {}), pol.capacity)
            return lanes

        for run, paused in candidates:
            pol = policies[run.job_name]
            scheduled = run.trigger == "schedule"
            if run.run_at > now:  # claimed ahead: only onto a free lease slot, else left queued
                slot = None if paused and scheduled else lanes_of(run.job_name, pol).take()
                if slot is not None:
                    wanted.append((run, slot))
                continue
            if scheduled and paused:
                skipped.append((run, "paused"))
                continue
            if (
                scheduled
                and run.scheduled_for is not None
                and (now - run.run_at > timedelta(seconds=pol.misfire_grace))
            ):
                skipped.append((run, "misfired"))
                continue
            lanes = lanes_of(run.job_name, pol)
            slot = lanes.take()
            if slot is not None:
                wanted.append((run, slot))
            elif scheduled and pol.overlap == "replace" and 0 in lanes.held:
                if lanes.take_for_replace():
                    replace.append((run, lanes.held[0]))
                else:
                    waiting += 1
            elif scheduled and not lanes.had_room and run.reason != "catch-up":
                skipped.append((run, "overlap"))  # a run from before still holds the lease
            else:
                waiting += 1  # runs after the holder: a catch-up slot, or one of this batch
        acquired, clock = self._acquire(conn, now, worker_id, wanted, lease_ttl)
        moved = _replace(conn, worker_id, replace, lease_ttl)
        waiting += len(wanted) - len(acquired) + len(replace) - len(moved)
        by_run = {lease.run_id: lease for lease in acquired + moved}
        # Runs not due yet and left queued (their job had no free lease slot, or a peer's
        # claim took it first): claim again at the first one's time.
        held_back = min(
            (run.run_at for run, _ in candidates if run.run_at > now and run.id not in by_run),
            default=None,
        )
        runs = [run for run, _ in wanted] + [run for run, _ in replace]
        # Each run as it was read (queued); it is now running under its lease.
        started = [ClaimedRun(run=r, lease=by_run[r.id]) for r in runs if r.id in by_run]
        # PostgreSQL's lease insert started its runs already (see `_acquire`).
        _start(conn, now, worker_id, moved if self.dialect == "postgresql" else acquired + moved)
        _finish_skipped(conn, skipped)
        return Claim(
            started=started,
            skipped=skipped,
            replaced=[old.run_id for _, old in replace if old.run_id is not None],
            waiting=max(waiting, 0),
            now=now,
            next_due=held_back,
            clock=clock,
        )

    def _acquire(
        self,
        conn: sa.Connection,
        now: datetime,
        worker_id: str,
        wanted: list[tuple[Run, int]],
        lease_ttl: float,
    ) -> tuple[list[Lease], datetime | None]:
        """Take free lease rows (insert, or update a released row) in one statement. On
        PostgreSQL the same statement marks the runs that got a lease running (a
        data-modifying CTE: one round trip less per claim); on SQLite `_start` does.
        Also returns the database's clock as the statement ended (`Claim.clock`)."""
        if not wanted:
            return [], None
        rows = [{"j": run.job_name, "s": slot, "r": run.id} for run, slot in wanted]
        if self.dialect == "postgresql":
            stmt = _acquire_and_start_statement()
            params = _rows(self.dialect, rows, worker=worker_id, ttl=lease_ttl, now=now)
            got = conn.execute(stmt, params).all()
            clock = max((row[4] for row in got), default=None)
            return [Lease(job_name=j, slot=s, run_id=r, fence=f) for j, s, r, f, _ in got], clock
        stmt = _acquire_statement(self.dialect)
        params = _rows(self.dialect, rows, worker=worker_id, ttl=lease_ttl)
        got = conn.execute(stmt, params).all()
        clock = datetime.now(UTC)  # SQLite's clock is this host's
        return [Lease(job_name=j, slot=s, run_id=r, fence=f) for j, s, r, f in got], clock

    # -- leases ---------------------------------------------------------------------------

    @contextmanager
    def _tx(self, conn: sa.Connection | None) -> Iterator[sa.Connection]:
        """The caller's transaction if given, else a new one."""
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as new:
            yield new

    @contextmanager
    def _queue_tx(self) -> Iterator[sa.Connection]:
        """A transaction of the worker's hot path (claim, outcomes), whose statements look
        runs up by index only, whatever the table's statistics say.

        Statistics lag the queue: autoanalyze runs at most once a minute, so right after a
        burst (a bulk enqueue, thousands of slots at one minute) PostgreSQL believes a
        handful of runs are queued and plans a bitmap scan of the whole backlog plus a sort
        for the claim, and a hash join over the table for the start. Measured with 20,000
        queued runs: 7-30 ms per claim of 200 instead of 0.3 ms. `set_config(..., true)`
        lasts for this transaction only (no session state, so PgBouncer's transaction
        pooling is fine); every statement in it has an index path.
        """
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(_INDEX_PLANS)
            yield conn

    def heartbeat(self, worker_id: str, lease_ttl: float, *, housekeeping: bool) -> Heartbeat:
        """A worker's periodic pass in one transaction: renew its leases (`renew`), take over
        expired ones (`reap`) and read the catalog (`catalog_state`). With `housekeeping` also
        count the queue, record orphaned runs lost and retire removed jobs
        (`retire_jobs`): checks that need not run on every heartbeat."""
        with self.engine.begin() as conn:
            return Heartbeat(
                renewal=self.renew(worker_id, lease_ttl, conn=conn),
                lost=self.reap(lease_ttl=lease_ttl, orphans=housekeeping, conn=conn),
                catalog=self.catalog_state(lease_ttl, conn=conn),
                queue_depth=self.queue_depth(conn=conn) if housekeeping else None,
                retired=self._housekeeping(conn, lease_ttl) if housekeeping else [],
                next_expiry_in=_next_expiry_in(conn, worker_id),
            )

    def _housekeeping(self, conn: sa.Connection, lease_ttl: float) -> list[str]:
        """Forget workers not seen for `FORGET_WORKERS_AFTER` (they are listed as stale until
        then) and retire jobs no live worker defines; returns the retired jobs."""
        conn.execute(
            jobrunner_workers.delete().where(
                jobrunner_workers.c.last_seen < db_now(-max(FORGET_WORKERS_AFTER, 10 * lease_ttl))
            )
        )
        return self.retire_jobs(lease_ttl, conn=conn)

    def renew(
        self, worker_id: str, lease_ttl: float, *, conn: sa.Connection | None = None
    ) -> Renewal:
        """Extend every lease of this worker to now + lease_ttl and mark it seen.

        Returns the run ids whose leases it still holds (a run missing from `held` was taken
        over: cancel it, its outcome will be refused) and those an operator asked to cancel.
        """
        with self._tx(conn) as conn:
            held = conn.execute(
                job_locks.update()
                .where(job_locks.c.worker_id == worker_id)
                .values(expires_at=db_now(lease_ttl))
                .returning(job_locks.c.run_id)
            ).scalars()
            held_ids = frozenset(i for i in held if i is not None)
            seen = conn.execute(
                jobrunner_workers.update()
                .where(jobrunner_workers.c.worker_id == worker_id)
                .values(last_seen=db_now())
            ).rowcount
            cancel: frozenset[int] = frozenset()
            if held_ids:
                cancel = frozenset(
                    conn.execute(
                        sa.select(job_runs.c.id).where(
                            job_runs.c.id.in_(held_ids), job_runs.c.cancel_requested
                        )
                    ).scalars()
                )
            return Renewal(held=held_ids, cancel_requested=cancel, registered=seen == 1)

    def finish(self, worker_id: str, outcomes: Sequence[Outcome]) -> set[int]:
        """Write final outcomes and release their leases, in one transaction.

        Fenced: an outcome is written only if this worker still holds that lease with that
        fence token; the returned set holds the run ids whose outcome was written (the others
        were taken over and are refused). Retries (`retry_in`) are queued as attempt + 1.
        """
        if not outcomes:
            return set()
        with self._queue_tx() as conn:
            # A lease row still names this worker and this run only if nobody took it over:
            # the reaper clears worker_id, a takeover or `replace` changes it and the run_id.
            ids = [o.lease.run_id for o in outcomes]
            release, succeeded = _finish_statements(self.dialect)
            released = {
                (j, slot)
                for j, slot in conn.execute(release, {"worker": worker_id, "ids": ids}).all()
            }
            mine = [o for o in outcomes if (o.lease.job_name, o.lease.slot) in released]
            if not mine:
                return set()
            plain = [o.lease.run_id for o in mine if o.status == "succeeded" and not o.reason]
            if plain:  # the common case in one statement
                # By id only: these runs are running, as this worker held their leases until
                # the release above (every path that ends a run moves or releases its lease
                # in the same transaction). A `status` condition here would let the planner
                # scan the running runs' index instead, which stale statistics make it do.
                conn.execute(succeeded, {"ids": plain})
            written_plain = set(plain)
            others = [o for o in mine if o.lease.run_id not in written_plain]
            if others:
                conn.execute(
                    job_runs.update()
                    .where(job_runs.c.id == sa.bindparam("rid"), job_runs.c.status == "running")
                    .values(
                        status=sa.bindparam("st"),
                        error=sa.bindparam("err", type_=sa.JSON(none_as_null=True)),
                        reason=sa.func.coalesce(sa.bindparam("why"), job_runs.c.reason),
                        finished_at=db_now(),
                        # a run claimed ahead and cancelled before its time never began
                        started_at=sa.case(
                            (job_runs.c.started_at > db_now(), db_now()),
                            else_=job_runs.c.started_at,
                        ),
                    ),
                    [
                        {"rid": o.lease.run_id, "st": o.status, "err": o.error, "why": o.reason}
                        for o in others
                    ],
                )
            retries = {o.lease.run_id: o.retry_in for o in mine if o.retry_in is not None}
            _queue_retries(conn, self._insert, retries)
            return {o.lease.run_id for o in mine}

    def reap(
        self,
        *,
        lease_ttl: float,
        retry_in: float = 0.0,
        orphans: bool = True,
        conn: sa.Connection | None = None,
    ) -> list[Run]:
        """Take over every expired lease and every orphaned running run.

        A lease whose holder stopped renewing (`expires_at < now`) is released; its run is
        recorded `lost` and, if attempts remain, queued again as attempt + 1. A run still
        `running` with no lease held for it and started more than `lease_ttl` ago is recorded
        `lost` too, so no run stays running forever. Rows are locked with SKIP LOCKED so
        replicas reaping together never double-handle one. Returns the runs recorded lost.
        """
        with self._tx(conn) as conn:
            expired = conn.execute(
                sa.select(job_locks.c.job_name, job_locks.c.slot, job_locks.c.run_id)
                .where(job_locks.c.worker_id.is_not(None), job_locks.c.expires_at < db_now())
                .with_for_update(skip_locked=True)
            ).all()
            if expired:
                conn.execute(
                    _release(
                        sa.tuple_(job_locks.c.job_name, job_locks.c.slot).in_(
                            [(e.job_name, e.slot) for e in expired]
                        )
                    )
                )
            lease_held = sa.exists().where(
                job_locks.c.run_id == job_runs.c.id, job_locks.c.worker_id.is_not(None)
            )
            which: sa.ColumnElement[bool] = job_runs.c.id.in_(
                [e.run_id for e in expired if e.run_id is not None]
            )
            if orphans:
                which = which | (~lease_held & (job_runs.c.started_at < db_now(-lease_ttl)))
            elif not expired:
                return []
            lost = conn.execute(
                job_runs.update()
                .where(job_runs.c.status == "running", which)
                .values(status="lost", reason="lease expired", finished_at=db_now())
                .returning(*job_runs.c)
            ).all()
            runs = [Run(**r._mapping) for r in lost]
            _queue_retries(
                conn, self._insert, {r.id: retry_in for r in runs if r.attempt < r.max_attempts}
            )
            return runs

    def list_locks(self) -> list[LockRow]:
        """Leases currently held (released rows are kept only to carry the fence forward)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(job_locks)
                .where(job_locks.c.worker_id.is_not(None))
                .order_by(job_locks.c.job_name, job_locks.c.slot)
            )
            return [LockRow(**r._mapping) for r in rows]

    # -- runs -----------------------------------------------------------------------------

    def get_run(self, run_id: int) -> Run:
        """One run (RunNotFound if there is none)."""
        with self.engine.connect() as conn:
            return queries.run_sync(conn, queries.get_run(run_id))

    def list_runs(
        self,
        *,
        job: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        correlation_id: str | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Runs newest first, filtered; an unknown status is BadInput (a ValueError)."""
        op = queries.list_runs(
            job=job, status=status, since=since, correlation_id=correlation_id, limit=limit
        )
        with self.engine.connect() as conn:
            return queries.run_sync(conn, op)

    def slot_runs(self, job: str, since: datetime, until: datetime) -> list[Run]:
        """Every run of `job` whose slot lies in [since, until], oldest slot first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(job_runs)
                .where(
                    job_runs.c.job_name == job,
                    job_runs.c.scheduled_for >= since,
                    job_runs.c.scheduled_for <= until,
                )
                .order_by(job_runs.c.scheduled_for, job_runs.c.attempt)
            )
            return [Run(**r._mapping) for r in rows]

    def cancel_run(self, run_id: int) -> Run:
        """Cancel a run: a queued run is recorded `cancelled` at once; a running run is
        flagged and its worker cancels it at its next heartbeat. Finished runs are unchanged."""
        with self.engine.begin() as conn:
            return queries.run_sync(conn, queries.cancel_run(run_id))

    def last_outcomes(self) -> dict[str, Run]:
        """The newest finished run of each job."""
        newest = (
            sa.select(sa.func.max(job_runs.c.id))
            .where(job_runs.c.status.in_(FINAL_STATUSES))
            .group_by(job_runs.c.job_name)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(job_runs).where(job_runs.c.id.in_(newest)))
            return {r.job_name: Run(**r._mapping) for r in rows}

    def queue_depth(self, *, conn: sa.Connection | None = None) -> int:
        """Queued runs that are due now."""
        with self._tx(conn) as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        job_runs.c.status == "queued", job_runs.c.run_at <= db_now()
                    )
                ).scalar_one()
            )

    def prune(self, *, older_than: timedelta | None, keep_last: int = 0) -> int:
        """Delete finished runs older than `older_than`, keeping the newest `keep_last` per job."""
        if older_than is None:
            return 0
        cond = job_runs.c.status.in_(FINAL_STATUSES) & (
            job_runs.c.finished_at < db_now(-older_than.total_seconds())
        )
        if keep_last > 0:
            newer = sa.alias(job_runs, "newer")
            rank = (
                sa.select(sa.func.count())
                .where(
                    newer.c.job_name == job_runs.c.job_name,
                    newer.c.id > job_runs.c.id,
                    newer.c.status.in_(FINAL_STATUSES),  # queued/running ones do not count
                )
                .scalar_subquery()
            )
            cond = cond & (rank >= keep_last)
        with self.engine.begin() as conn:
            return conn.execute(job_runs.delete().where(cond)).rowcount

    # -- management queries ---------------------------------------------------------------

    def run_attempts(self, run_id: int) -> list[Run]:
        """Every attempt of the run, oldest first (RunNotFound if there is no such run).

        A scheduled run's attempts share its slot (job_name, scheduled_for); a manual run and
        its retries are linked by `retry_of`, followed both ways. One read-only transaction.
        """
        with self.engine.connect() as conn:
            run = queries.run_sync(conn, queries.get_run(run_id))
            if run.scheduled_for is not None:
                rows = conn.execute(
                    sa.select(job_runs)
                    .where(
                        job_runs.c.job_name == run.job_name,
                        job_runs.c.scheduled_for == run.scheduled_for,
                    )
                    .order_by(job_runs.c.attempt, job_runs.c.id)
                )
                return [Run(**r._mapping) for r in rows]
            chain = {run.id: run}
            first = run
            while first.retry_of is not None and first.retry_of not in chain:
                row = conn.execute(
                    sa.select(job_runs).where(job_runs.c.id == first.retry_of)
                ).one_or_none()
                if row is None:  # pruned
                    break
                first = chain.setdefault(row.id, Run(**row._mapping))
            frontier = list(chain)
            while frontier:
                rows = conn.execute(sa.select(job_runs).where(job_runs.c.retry_of.in_(frontier)))
                found = [Run(**r._mapping) for r in rows if r.id not in chain]
                chain.update((r.id, r) for r in found)
                frontier = [r.id for r in found]
            return sorted(chain.values(), key=lambda r: (r.attempt, r.id))

    def slot_bounds(self, job: str) -> tuple[datetime | None, datetime | None]:
        """The oldest and the newest recorded slot of `job` (None, None if it has none)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    sa.func.min(job_runs.c.scheduled_for), sa.func.max(job_runs.c.scheduled_for)
                ).where(job_runs.c.job_name == job, job_runs.c.scheduled_for.is_not(None))
            ).one()
            return row[0], row[1]

    def has_runs(self, job: str) -> bool:
        """Whether any run of `job` is recorded (a job retired from the catalog may have some)."""
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(job_runs.c.id).where(job_runs.c.job_name == job).limit(1)
            ).first()
            return found is not None


# -- statement helpers (module private) ---------------------------------------------------


def _release(where: sa.ColumnElement[bool]) -> sa.Update:
    """Release leases: the row stays so the fence keeps growing on the next acquire."""
    return (
        job_locks.update()
        .where(where)
        .values(run_id=None, worker_id=None, acquired_at=None, expires_at=None)
    )


def _in(dialect: str, column: Any, name: str) -> sa.ColumnElement[bool]:
    """`column IN :name`, the list given at execution. On PostgreSQL `= ANY(:name)`: one
    array parameter whatever the count, so the statement text (and psycopg's prepared form)
    stays the same."""
    if dialect == "postgresql":
        array = sa.bindparam(name, type_=PgArray.of(column.type))
        return column == sa.any_(array)  # type: ignore[no-any-return]
    return column.in_(sa.bindparam(name, expanding=True))  # type: ignore[no-any-return]


def _unnest(*columns: tuple[str, Any]) -> Any:
    """PostgreSQL `unnest(:v_a, :v_b, ...) AS v(a, b, ...)`: rows passed as one array per
    column, given at execution as parameters `v_a`, `v_b`, ..."""
    arrays = [sa.bindparam(f"v_{name}", type_=PgArray.of(kind)) for name, kind in columns]
    return (
        sa.func.unnest(*arrays)
        .table_valued(*(sa.column(name, kind) for name, kind in columns))
        .render_derived(name="v")
    )


@functools.cache
def _slots_statement(dialect: str) -> Any:
    """Record scheduled slots, idempotently (`ON CONFLICT DO NOTHING`), given as `j` (job),
    `sf` (slot), `ra` (run_at), `st` (status), `why` (reason) and `ma` (max attempts).

    PostgreSQL: one statement of fixed text whatever the count, each of them an array
    parameter (`v_j`, ...): 10,000 slots due at one minute took 1.1 s as an executemany,
    0.2 s so. SQLite: executemany, RETURNING the new ids (it has no array type)."""
    keys: dict[str, Any] = {
        "j": sa.String(),
        "sf": UTCDateTime(),
        "ra": UTCDateTime(),
        "st": sa.String(),
        "why": sa.String(),
        "ma": sa.Integer(),
    }
    if dialect == "postgresql":
        rows = _unnest(*keys.items())
        given = {k: rows.c[k] for k in keys}
    else:
        given = {k: sa.bindparam(k, type_=kind) for k, kind in keys.items()}
    values = {
        "job_name": given["j"],
        "trigger": sa.literal("schedule"),
        "scheduled_for": given["sf"],
        "run_at": given["ra"],
        "status": given["st"],
        "reason": given["why"],
        "attempt": sa.literal(1),
        "max_attempts": given["ma"],
        "kwargs": sa.literal({}, type_=sa.JSON()),
        "enqueued_at": db_now(),
        "finished_at": sa.case((given["st"] == "skipped", db_now()), else_=sa.null()),
    }
    insert: Any
    if dialect == "postgresql":
        insert = postgresql.insert(job_runs).from_select(list(values), sa.select(*values.values()))
    else:
        insert = sqlite.insert(job_runs).values(values)
    stmt = insert.on_conflict_do_nothing(index_elements=SLOT_KEY, index_where=SCHEDULED)
    return stmt.returning(job_runs.c.id)


@functools.cache
def _finish_statements(dialect: str) -> tuple[sa.Update, sa.Update]:
    """Built once: release this worker's leases of `:ids` (RETURNING the rows released),
    and record the runs `:ids` succeeded."""
    held = (job_locks.c.worker_id == sa.bindparam("worker", type_=sa.String())) & _in(
        dialect, job_locks.c.run_id, "ids"
    )
    release = _release(held).returning(job_locks.c.job_name, job_locks.c.slot)
    succeeded = (
        job_runs.update()
        .where(_in(dialect, job_runs.c.id, "ids"))
        .values(status="succeeded", finished_at=db_now())
    )
    return release, succeeded


@functools.cache
def _acquire_statement(dialect: str) -> Any:
    """Take free lease rows: insert, or update a released row (`worker_id` NULL); RETURNING
    the leases taken. Built once per dialect; rows and lease given at execution."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    worker = sa.bindparam("worker", type_=sa.String())
    expires = db_now(sa.bindparam("ttl", type_=sa.Float()))
    columns = ["job_name", "slot", "run_id", "worker_id", "fence", "acquired_at", "expires_at"]
    if dialect == "postgresql":
        # The rows as three array parameters: one statement text whatever the batch size,
        # prepared once by psycopg (a multi-row VALUES is re-rendered for every size).
        rows = _unnest(("j", sa.String()), ("s", sa.Integer()), ("r", sa.BigInteger()))
        source = sa.select(rows.c.j, rows.c.s, rows.c.r, worker, sa.literal(1), db_now(), expires)
        stmt = insert(job_locks).from_select(columns, source)
    else:  # SQLite: executemany, batched by SQLAlchemy (insertmanyvalues)
        values = [sa.bindparam("j"), sa.bindparam("s"), sa.bindparam("r"), worker, 1, db_now()]
        stmt = insert(job_locks).values(dict(zip(columns, [*values, expires], strict=True)))
    return stmt.on_conflict_do_update(
        index_elements=["job_name", "slot"],
        set_={
            "run_id": stmt.excluded.run_id,
            "worker_id": stmt.excluded.worker_id,
            "fence": job_locks.c.fence + 1,
            "acquired_at": stmt.excluded.acquired_at,
            "expires_at": stmt.excluded.expires_at,
        },
        where=job_locks.c.worker_id.is_(None),
    ).returning(job_locks.c.job_name, job_locks.c.slot, job_locks.c.run_id, job_locks.c.fence)


# A run claimed ahead of its `run_at` (see `Store.claim`) starts then, not at the claim.
_CLAIMED_AT = sa.bindparam("now", type_=UTCDateTime())
_STARTED_AT = sa.case((job_runs.c.run_at > _CLAIMED_AT, job_runs.c.run_at), else_=_CLAIMED_AT)


@functools.cache
def _acquire_and_start_statement() -> sa.Select[Any]:
    """PostgreSQL: `_acquire_statement` as a data-modifying CTE whose leases' runs one UPDATE
    marks running (`:worker`, started at `:now`, the lease's fence); selects the leases."""
    taken = _acquire_statement("postgresql").cte("taken")
    start = (
        job_runs.update()
        .where(job_runs.c.id == taken.c.run_id)
        .values(
            status="running",
            worker_id=sa.bindparam("worker", type_=sa.String()),
            started_at=_STARTED_AT,
            fence=taken.c.fence,
        )
    )
    clock = sa.func.clock_timestamp(type_=UTCDateTime())  # when the row was returned
    leases = sa.select(taken.c.job_name, taken.c.slot, taken.c.run_id, taken.c.fence, clock)
    return leases.add_cte(start.cte("started"))


def _rows(dialect: str, rows: list[dict[str, Any]], **same: Any) -> Any:
    """Execution parameters for rows of a statement built for both dialects: on PostgreSQL
    one array per key (`v_<key>`, see `_unnest`), on SQLite the rows for an executemany;
    `same` holds the parameters every row shares."""
    if dialect == "postgresql":
        return {**{f"v_{key}": [row[key] for row in rows] for key in rows[0]}, **same}
    return [{**row, **same} for row in rows]


_HELD_LEASES = sa.select(
    job_locks.c.job_name, job_locks.c.slot, job_locks.c.run_id, job_locks.c.fence
).where(job_locks.c.worker_id.is_not(None))


def _held_leases(conn: sa.Connection) -> dict[str, dict[int, Lease]]:
    """Every held lease (of any worker), by job and slot: what a claim decides with."""
    held: dict[str, dict[int, Lease]] = defaultdict(dict)
    for job_name, slot, run_id, fence in conn.execute(_HELD_LEASES).all():
        held[job_name][slot] = Lease(job_name=job_name, slot=slot, run_id=run_id, fence=fence)
    return held


def _candidates(
    conn: sa.Connection, limit: int, jobs: list[str], saturated: list[str], ahead: float
) -> tuple[list[tuple[Run, bool]], datetime | None]:
    """Queued runs due within `ahead` seconds (locked, SKIP LOCKED), each with its job's
    paused flag, and db now."""
    query = _candidates_query(conn.dialect.name, bool(saturated))
    params: dict[str, Any] = {"jobs": jobs, "limit": limit, "ahead": ahead}
    if saturated:
        params["saturated"] = saturated
    names = job_runs.c.keys()
    width = len(names)
    rows = conn.execute(query, params).all()
    out = [(Run.from_columns(names, row[:width]), bool(row[width])) for row in rows]
    # `_now` comes raw (the same in every row): converted once, not once per row.
    now = _NOW_TYPE.process_result_value(rows[-1][width + 1], conn.dialect) if rows else None
    return out, now


_NOW_TYPE = UTCDateTime()
_AHEAD = sa.bindparam("ahead", type_=sa.Float())


@functools.cache
def _candidates_query(dialect: str, saturated: bool) -> sa.Select[Any]:
    """The claim's read, built once: queued runs of `:jobs` due within `:ahead` seconds in
    claim order, at most `:limit`, locked; with `saturated`, runs of `:saturated` jobs only
    if scheduled."""
    paused = (
        sa.select(jobrunner_jobs.c.paused)
        .where(jobrunner_jobs.c.name == job_runs.c.job_name)
        .scalar_subquery()
    )
    query = (
        sa.select(
            job_runs,
            sa.func.coalesce(paused, sa.false()).label("_paused"),
            sa.type_coerce(db_now(), sa.types.NullType()).label("_now"),
        )
        .where(
            job_runs.c.status == "queued",
            job_runs.c.run_at <= db_now(_AHEAD),
            _in(dialect, job_runs.c.job_name, "jobs"),
        )
        .order_by(job_runs.c.run_at, job_runs.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
        .with_for_update(skip_locked=True, of=job_runs)
    )
    if saturated:
        query = query.where(
            (job_runs.c.trigger == "schedule") | ~_in(dialect, job_runs.c.job_name, "saturated")
        )
    return query


def _next_expiry_in(conn: sa.Connection, worker_id: str) -> float | None:
    """Seconds until the first lease held by another worker expires (by the database's
    clock), so a peer can reap a dead holder's lease right when it expires."""
    first, now = conn.execute(
        sa.select(sa.func.min(job_locks.c.expires_at), db_now()).where(
            job_locks.c.worker_id.is_not(None), job_locks.c.worker_id != worker_id
        )
    ).one()
    return None if first is None else (first - now).total_seconds()


def _next_due(conn: sa.Connection, jobs: list[str]) -> tuple[datetime | None, datetime, datetime]:
    """The earliest future `run_at` of a queued run of these jobs (to sleep until it), the
    database's now, and its clock as the query ended."""
    dialect = conn.dialect.name
    row = conn.execute(_next_due_query(dialect), {"jobs": jobs}).one()
    return row[0], row[1], row[2] if dialect == "postgresql" else datetime.now(UTC)


@functools.cache
def _next_due_query(dialect: str) -> sa.Select[Any]:
    columns: list[sa.ColumnElement[Any]] = [sa.func.min(job_runs.c.run_at), db_now()]
    if dialect == "postgresql":
        columns.append(sa.func.clock_timestamp(type_=UTCDateTime()))
    return sa.select(*columns).where(
        job_runs.c.status == "queued",
        job_runs.c.run_at > db_now(),
        _in(dialect, job_runs.c.job_name, "jobs"),
    )


class _Slots:
    """Hands out free lease slots of one job during one claim (slot numbers 0, 1, ...)."""

    def __init__(self, held: dict[int, Lease], capacity: int | None) -> None:
        self.held = held
        self.capacity = capacity
        self.busy = set(held)
        self.had_room = _free_slot(self.busy, capacity) is not None
        self._next = 0
        self._replaced = False

    def take(self) -> int | None:
        while self._next in self.busy:
            self._next += 1
        if self.capacity is not None and self._next >= self.capacity:
            return None
        self.busy.add(self._next)
        return self._next

    def take_for_replace(self) -> bool:
        """The first scheduled run that finds slot 0 held may replace its holder, once."""
        if self._replaced:
            return False
        self._replaced = True
        return True


def _free_slot(busy: set[int], capacity: int | None) -> int | None:
    slot = 0
    while slot in busy:
        slot += 1
    return slot if capacity is None or slot < capacity else None


def _replace(
    conn: sa.Connection, worker_id: str, replace: list[tuple[Run, Lease]], lease_ttl: float
) -> list[Lease]:
    """Move a held lease to a new run (overlap `replace`); the old run is recorded cancelled."""
    leases = []
    for run, old in replace:
        fence = conn.execute(
            job_locks.update()
            .where(
                job_locks.c.job_name == old.job_name,
                job_locks.c.slot == old.slot,
                job_locks.c.fence == old.fence,
            )
            .values(
                run_id=run.id,
                worker_id=worker_id,
                fence=job_locks.c.fence + 1,
                acquired_at=db_now(),
                expires_at=db_now(lease_ttl),
            )
            .returning(job_locks.c.fence)
        ).scalar_one_or_none()
        if fence is None:
            continue
        leases.append(Lease(job_name=run.job_name, slot=old.slot, run_id=run.id, fence=fence))
        conn.execute(
            job_runs.update()
            .where(job_runs.c.id == old.run_id, job_runs.c.status == "running")
            .values(status="cancelled", reason="replaced", finished_at=db_now())
        )
    return leases


def _start(conn: sa.Connection, now: datetime, worker_id: str, leases: list[Lease]) -> None:
    """Mark the runs of these leases running under them."""
    if leases:
        rows = [{"rid": lease.run_id, "f": lease.fence} for lease in leases]
        params = _rows(conn.dialect.name, rows, worker=worker_id, now=now)
        conn.execute(_start_statement(conn.dialect.name), params)


@functools.cache
def _start_statement(dialect: str) -> sa.Update:
    """Mark claimed runs (`rid`) running under their leases (fence `f`): one statement of
    fixed text on PostgreSQL (see `_rows`), executemany on SQLite."""
    started = {
        "status": "running",
        "worker_id": sa.bindparam("worker", type_=sa.String()),
        "started_at": _STARTED_AT,
    }
    if dialect == "postgresql":
        rows = _unnest(("rid", sa.BigInteger()), ("f", sa.BigInteger()))
        update = job_runs.update().where(job_runs.c.id == rows.c.rid)
        return update.values(fence=rows.c.f, **started)
    return (
        job_runs.update()
        .where(job_runs.c.id == sa.bindparam("rid"))
        .values(fence=sa.bindparam("f"), **started)
    )


def _finish_skipped(conn: sa.Connection, skipped: list[tuple[Run, str]]) -> None:
    if skipped:
        conn.execute(
            job_runs.update()
            .where(job_runs.c.id == sa.bindparam("rid"))
            .values(status="skipped", reason=sa.bindparam("why"), finished_at=db_now()),
            [{"rid": run.id, "why": why} for run, why in skipped],
        )


def _queue_retries(conn: sa.Connection, insert: Any, delays: Mapping[int, float]) -> None:
    """Queue attempt + 1 of each run in `delays` (run id -> seconds from now) that has
    attempts left, copying its job, slot, kwargs and correlation id (idempotent per slot)."""
    if not delays:
        return
    source = sa.select(
        job_runs.c.job_name,
        sa.literal("retry"),
        job_runs.c.scheduled_for,
        db_now(sa.bindparam("delay", type_=sa.Float())),
        sa.literal("queued"),
        job_runs.c.attempt + 1,
        job_runs.c.max_attempts,
        job_runs.c.kwargs,
        db_now(),
        job_runs.c.correlation_id,
        job_runs.c.id,
    ).where(job_runs.c.id == sa.bindparam("rid"), job_runs.c.attempt < job_runs.c.max_attempts)
    columns = [
        "job_name", "trigger", "scheduled_for", "run_at", "status", "attempt", "max_attempts",
        "kwargs", "enqueued_at", "correlation_id", "retry_of",
    ]  # fmt: skip
    stmt = (
        insert(job_runs)
        .from_select(columns, source)
        .on_conflict_do_nothing(index_elements=SLOT_KEY, index_where=SCHEDULED)
    )
    conn.execute(stmt, [{"rid": rid, "delay": delay} for rid, delay in delays.items()])
    note = queries.notify(conn.dialect.name, "retry")
    if note is not None:  # wake listening workers: a retry may be due now
        conn.execute(note)
