"""The worker daemon: `jobrunner run`.

Small services, each one `async def ..._once()` plus a thin loop, supervised by one TaskGroup
(if a service dies, the worker stops loudly):

- scheduler: sleeps until the next fire time (a heap), records due slots in one statement;
- claimer: claims due queued runs up to free capacity and starts them; it wakes `CLAIM_AHEAD`
  before the next due run, so that the claim is done by then and the run begins on time;
- heartbeat: renews all leases and `last_seen` in one transaction, cancels runs whose lease is
  gone or whose cancel was requested, and reaps leases of dead peers;
- recorder: writes outcomes of runs that finished close together in one transaction;
- pruner: deletes old run history per `[history]`.

The worker never builds SQL: it calls the store (blocking, in a small thread pool of its own).
A database outage is logged once per backoff step; services back off and resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from jobrunner import __version__
from jobrunner.config import Config, JobConfig
from jobrunner.context import JobContext, Result
from jobrunner.errors import ClockSkew
from jobrunner.health import database_ready, probe_loop
from jobrunner.logging import get_logger
from jobrunner.policy import retry_after
from jobrunner.records import (
    CatalogEntry,
    ClaimedRun,
    Outcome,
    Policy,
    WorkerInfo,
    catalog_entries,
)
from jobrunner.store import migrate
from jobrunner.store.engine import DB_ERRORS
from jobrunner.store.store import Store
from jobrunner.worker.executor import Executor
from jobrunner.worker.http import HttpServer, start_http
from jobrunner.worker.metrics import Metrics
from jobrunner.worker.timetable import Plan, Timetable

if TYPE_CHECKING:
    from jobrunner.store.listen import Listener

T = TypeVar("T")
log = get_logger("jobrunner.worker")
LOOKAHEAD = timedelta(milliseconds=500)  # slots are recorded at least this long before due
MAX_LOOKAHEAD = timedelta(seconds=2)  # ... and at most this long (see schedule_once)
CLAIM_AHEAD = 0.05  # seconds: runs due this soon are claimed now and begin at their time
HOUSEKEEPING_EVERY = 5  # heartbeats between checks that need not run every time


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass(kw_only=True)
class Active:
    """A run executing in this worker."""

    claimed: ClaimedRun
    job: JobConfig
    ctx: JobContext
    begin_at: float = 0.0  # time.monotonic() when it is due (claimed ahead of its time)
    task: asyncio.Task[None] | None = None
    stop_reason: str | None = None  # lost | cancelled | shutdown


@dataclass
class Backoff:
    """Exponential backoff for database errors; logs once per step."""

    name: str
    on_error: Callable[[], None] | None = None
    step: int = 0
    failing_since: float | None = field(default=None)

    delay_cap = 5.0

    def delay(self) -> float:
        return min(0.5 * 2.0**self.step, self.delay_cap)

    def failed(self, exc: BaseException) -> float:
        delay = self.delay()
        self.failing_since = self.failing_since or time.monotonic()
        if self.on_error is not None:
            self.on_error()
        growing = delay < self.delay_cap
        if growing or self.step % 12 == 0:  # each backoff step, then about once a minute
            log.warning(
                "database unavailable",
                service=self.name,
                error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                retry_in=delay,
            )
        self.step += 1
        return delay

    def ok(self) -> None:
        if self.failing_since is not None:
            log.info(
                "database reachable again",
                service=self.name,
                outage_seconds=round(time.monotonic() - self.failing_since, 1),
            )
        self.step, self.failing_since = 0, None


class Worker:
    def __init__(self, config: Config, store: Store, *, worker_id: str | None = None) -> None:
        self.config = config
        self.store = store
        self.id = worker_id or new_worker_id()
        self.jobs = {j.name: j for j in config.jobs}
        self.policies = {
            j.name: Policy(
                overlap=j.overlap,
                max_concurrency=j.max_concurrency,
                misfire_grace=j.misfire_grace.total_seconds(),
            )
            for j in config.jobs
        }
        self.executor = Executor(
            config.worker.threads,
            processes=config.worker.processes,
            import_paths=config.worker.import_paths,
        )
        self.metrics = Metrics(self.id, __version__, config.config_hash)
        self._http: HttpServer | None = None
        self.active: dict[int, Active] = {}  # until the outcome is written
        self.executing = 0  # runs whose call has not returned yet
        self.pending: list[Outcome] = []
        self.stopping = asyncio.Event()
        self.wake_claimer = asyncio.Event()
        self.wake_recorder = asyncio.Event()
        self.last_heartbeat = time.monotonic()  # last heartbeat pass, successful or not
        self._db_pool = ThreadPoolExecutor(4, thread_name_prefix="jobrunner-db")
        self._timetable: Timetable | None = None
        self._lookahead = MAX_LOOKAHEAD  # until a pass has been timed (see schedule_once)
        self._signals = 0
        self._listener: Listener | None = None
        self._catalog_hashes: dict[str, str] = {}
        self._warned: set[str] = set()
        self._beats = 0  # heartbeats so far: slow checks run on every HOUSEKEEPING_EVERY-th
        self._log = log.bind()  # a concrete logger: each run binds its context onto it
        # Pipelining under load: while the last claim filled every free place (a backlog),
        # the claimer is woken as soon as a quarter of the places are free again, so the
        # next claim overlaps with writing the outcomes of the runs before. That claim
        # leaves out jobs of limited concurrency with an outcome still unwritten: their
        # lease is held until it is written (a slot due meanwhile would look like an overlap).
        self._backlog = False
        self._refill_at = max(1, config.worker.concurrency // 4)
        self._unwritten: Counter[str] = Counter()  # limited job -> its outcomes not written
        self._unstarted = 0  # runs launched whose task has not begun yet

    # -- helpers --------------------------------------------------------------------------

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_pool, lambda: fn(*args, **kwargs))

    @property
    def lease_ttl(self) -> float:
        return self.config.worker.lease_ttl.total_seconds()

    @property
    def capacity(self) -> int:
        """Runs this worker may start now (a run frees its place when its call returns)."""
        return self.config.worker.concurrency - self.executing

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        """Check schema and clock, register, publish the catalog, load slot cursors."""
        await self.db(migrate.init_if_empty, self.store.engine)
        db_now = await self.db(self.store.now)
        offset = (datetime.now(UTC) - db_now).total_seconds()
        log.info("clock offset to database", offset_seconds=round(offset, 3))
        if abs(offset) > self.config.worker.max_clock_skew.total_seconds():
            raise ClockSkew(
                f"host clock is {offset:+.1f}s off the database clock, more than "
                f"worker.max_clock_skew ({self.config.worker.max_clock_skew.total_seconds():g}s): "
                "fix NTP on this host"
            )
        await self.db(self.store.register_worker, self._info())
        await self.db(self.store.publish_catalog, self._catalog(), self.id)
        cursors = await self.db(self.store.slot_cursors, list(self.jobs))
        self._timetable = Timetable(self.config.jobs, cursors, datetime.now(UTC))
        await self.db(self.store.reap, lease_ttl=self.lease_ttl)
        await self._refresh_catalog()
        if self.store.dialect == "postgresql":
            from jobrunner.store.listen import Listener  # loads psycopg: not for SQLite

            loop = asyncio.get_running_loop()

            def wake(_payload: str) -> None:
                loop.call_soon_threadsafe(self.wake_claimer.set)

            self._listener = Listener(self.config.database.listen_url, wake)
            self._listener.start()
        if any(j.isolation == "process" for j in self.config.jobs):
            await self.executor.process_pool.warm()
        self._start_http()
        log.info(
            "worker started",
            version=__version__,
            jobs=len(self.jobs),
            concurrency=self.config.worker.concurrency,
            database=self.config.database.url,
        )

    def _start_http(self) -> None:
        http = self.config.http
        if http is None:
            return
        loop = asyncio.get_running_loop()
        stale_after = max(3 * self.config.worker.heartbeat.total_seconds(), 30.0)

        def healthy() -> tuple[bool, str]:
            ok, why = probe_loop(loop)
            age = time.monotonic() - self.last_heartbeat
            if ok and age > stale_after:
                return False, f"heartbeat loop stalled: last pass {age:.0f}s ago"
            return ok, why

        self._http = start_http(
            http.host,
            http.port,
            metrics=self.metrics,
            healthy=healthy,
            ready=lambda: database_ready(self.store),
        )
        log.info("http endpoint listening", address=f"{http.host}:{self._http.port}")

    def _info(self) -> WorkerInfo:
        return WorkerInfo(
            worker_id=self.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            config_hash=self.config.config_hash,
            jobs={j.name: j.definition_hash for j in self.config.jobs},
        )

    def _catalog(self) -> list[CatalogEntry]:
        return catalog_entries(self.config.jobs)

    async def run(self) -> int:
        """Run until signalled; returns the exit code."""
        structlog.contextvars.bind_contextvars(worker_id=self.id)
        self._install_signals()
        await self.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._scheduler())
                tg.create_task(self._claimer())
                tg.create_task(self._heartbeat())
                tg.create_task(self._recorder())
                tg.create_task(self._pruner())
                await self.stopping.wait()
                await self._drain()
                raise _Stop
        except* _Stop:
            pass
        finally:
            await self._finish()
        return 0

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting at once", signal=sig.name)
            sys.stderr.flush()
            os._exit(128 + sig.value)
        log.info("signal received: draining", signal=sig.name, running=len(self.active))
        self.request_stop()

    def request_stop(self) -> None:
        self.stopping.set()
        self.wake_claimer.set()

    async def _drain(self) -> None:
        """Let running jobs finish within `shutdown_grace`, then cancel the rest."""
        await self._try_db(self.store.set_worker_state, self.id, "draining")
        tasks = [a.task for a in self.active.values() if a.task is not None]
        grace = self.config.worker.shutdown_grace.total_seconds()
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=grace)
            for active in list(self.active.values()):
                if active.task in still:
                    self._stop_run(active, "shutdown")
            if still:
                await asyncio.wait(still, timeout=5)
        await self._flush()

    async def _finish(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        if self._http is not None:
            self._http.stop()
        await self._flush()
        await self._try_db(self.store.deregister_worker, self.id)
        self.executor.shutdown()
        self._db_pool.shutdown(wait=False)
        log.info("worker stopped")

    async def _try_db(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await self.db(fn, *args)
        except DB_ERRORS as exc:
            log.warning("database call failed during shutdown", call=fn.__name__, error=str(exc))
            return None

    # -- scheduler ------------------------------------------------------------------------

    async def _scheduler(self) -> None:
        backoff = Backoff("scheduler", self.metrics.db_error)
        while not self.stopping.is_set():
            delay = await self._guard(backoff, self.schedule_once)
            await _sleep_or(self.stopping, delay)

    async def schedule_once(self) -> float:
        """Record every slot due within the look-ahead; returns seconds until the next pass.

        Slots are written ahead of their time (queued, `run_at` = the slot), so at the fire
        time every replica's claimer, sleeping until the earliest `run_at`, only has to claim:
        the start lag is one claim, not a write and a claim. The look-ahead is twice the
        last pass's duration (at least `LOOKAHEAD`, at most `MAX_LOOKAHEAD`, the most before
        the first pass), so that thousands of jobs due at the same minute are still written
        before it, the first minute after start included.
        """
        table = self._timetable
        assert table is not None
        started = time.monotonic()
        clock = datetime.now(UTC)
        now = clock + self._lookahead  # the horizon: slots up to it are recorded now
        names = table.due(now)
        if names:
            owned = [n for n in names if self._owns_schedule(n)]
            plans_owned = table.plan(owned, clock, ahead=self._lookahead)
            planned = dict(zip(owned, plans_owned, strict=True))
            plans = [planned.get(n, Plan(slots=[])) for n in names]
            try:
                await self.db(self.store.insert_slots, [s for p in plans for s in p.slots])
            except BaseException:
                table.retry_later(names)
                raise
            table.advance(names, now)
            for name, plan in zip(names, plans, strict=True):
                for slot in plan.slots:
                    if slot.status == "skipped":
                        self.metrics.slot_skipped(name, slot.reason or "misfired")
                if plan.unrecorded:
                    log.warning("missed slots too old to record", job=name, count=plan.unrecorded)
            self.wake_claimer.set()
            took = timedelta(seconds=time.monotonic() - started)
            self._lookahead = min(max(LOOKAHEAD, 2 * took), MAX_LOOKAHEAD)
        nxt = table.next_due()
        if nxt is None:
            return 3600.0
        return max((nxt - self._lookahead - datetime.now(UTC)).total_seconds(), 0.0)

    def _owns_schedule(self, name: str) -> bool:
        """Rolling deploys: a job's slots are recorded only by workers whose definition of it
        matches the catalog's, which holds the most recently started worker's definition."""
        mine = self.jobs[name].definition_hash
        theirs = self._catalog_hashes.get(name, mine)
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

    async def _refresh_catalog(self, state: dict[str, tuple[str, bool]] | None = None) -> None:
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
            await self.db(self.store.publish_catalog, orphaned, self.id)
            log.info(
                "republished definitions whose publisher is gone", jobs=[e.name for e in orphaned]
            )
            state = await self.db(self.store.catalog_state, self.lease_ttl)
        self._catalog_hashes = {name: h for name, (h, _alive) in state.items()}

    # -- claimer --------------------------------------------------------------------------

    async def _claimer(self) -> None:
        backoff = Backoff("claimer", self.metrics.db_error)
        while not self.stopping.is_set():
            self.wake_claimer.clear()
            delay = await self._guard(backoff, self.claim_once)
            if delay > 0:
                await _sleep_or(self.wake_claimer, delay)

    def _poll_interval(self) -> float:
        poll = self.config.worker.poll_interval.total_seconds()
        # With LISTEN/NOTIFY wake-ups the poll is only a fallback: keep idle load low.
        return max(poll, 60.0) if self._listener is not None else poll

    async def claim_once(self) -> float:
        """Claim due runs up to free capacity and start them.

        Runs due within `CLAIM_AHEAD` are claimed too and begin at their time. Returns 0 when
        there may be more to claim at once, else seconds to sleep: until `CLAIM_AHEAD` before
        the earliest future queued run, at most the poll interval (enqueues and finished runs
        wake the claimer earlier).
        """
        poll = self._poll_interval()
        free = self.capacity
        if free <= 0 or self.stopping.is_set():
            return poll
        sent = time.monotonic()
        claim = await self.db(
            self.store.claim,
            worker_id=self.id,
            limit=free,
            policies=self._claimable(),
            lease_ttl=self.lease_ttl,
            ahead=CLAIM_AHEAD,
        )
        returned = time.monotonic()
        for run, reason in claim.skipped:
            self.metrics.slot_skipped(run.job_name, reason)
            log.info(
                "slot skipped",
                job=run.job_name,
                scheduled_for=_iso(run.scheduled_for),
                reason=reason,
                run_id=run.id,
            )
        for claimed in claim.started:
            self._launch(claimed, claim.clock, returned)
        got = len(claim.started) + len(claim.skipped)
        self._backlog = got >= free
        if self._backlog and self.capacity > 0:
            return 0.0
        if claim.next_due is None:
            return poll
        if claim.clock is not None:  # read late in the claim: counted from its return
            until = (claim.next_due - claim.clock).total_seconds() - (time.monotonic() - returned)
        elif claim.now is not None:  # when the claim's transaction began, after it was sent
            until = (claim.next_due - claim.now).total_seconds() - (time.monotonic() - sent)
        else:
            return poll
        return min(max(until, 0.001), poll)

    def _claimable(self) -> Mapping[str, Policy]:
        """The jobs a claim may take runs of: all but limited jobs with an unwritten outcome."""
        if not self._unwritten:
            return self.policies
        return {n: pol for n, pol in self.policies.items() if n not in self._unwritten}

    def _launch(self, claimed: ClaimedRun, clock: datetime | None, returned: float) -> None:
        """Start a task for a claimed run; one claimed ahead of its `run_at` waits for it:
        by the database's `clock` as the claim read it, counted from when it `returned`."""
        run = claimed.run
        job = self.jobs[run.job_name]
        context = {
            "job": run.job_name,
            "run_id": run.id,
            "attempt": run.attempt,
            "scheduled_for": _iso(run.scheduled_for),
        }
        if run.correlation_id:
            context["correlation_id"] = run.correlation_id
        ctx = JobContext(
            run_id=run.id,
            job_name=run.job_name,
            scheduled_for=run.scheduled_for,
            attempt=run.attempt,
            worker_id=self.id,
            fence=claimed.lease.fence,
            correlation_id=run.correlation_id,
            log=self._log.bind(**context),
        )
        active = Active(claimed=claimed, job=job, ctx=ctx)
        if clock is not None and run.run_at > clock:
            active.begin_at = returned + (run.run_at - clock).total_seconds()
        self.active[run.id] = active
        self.executing += 1
        self._unstarted += 1
        active.task = asyncio.create_task(self._execute(active, context), name=f"run-{run.id}")

    async def _execute(self, active: Active, context: dict[str, Any]) -> None:
        self._unstarted -= 1
        structlog.contextvars.bind_contextvars(**context)
        run, job = active.claimed.run, active.job
        kwargs = {**job.kwargs, **run.kwargs}
        if job.accepts_ctx:
            kwargs["ctx"] = active.ctx
        limit = job.timeout.total_seconds() if job.timeout else None
        assert job.fn is not None
        started, lag = time.monotonic(), 0.0
        try:
            if active.begin_at > started:  # claimed ahead of its time
                await asyncio.sleep(active.begin_at - started)
                started = time.monotonic()
            now = datetime.now(UTC)
            lag = (now - run.run_at).total_seconds()
            slot = run.scheduled_for if run.trigger == "schedule" else None
            fire_lag = None if slot is None else (now - slot).total_seconds()
            self.metrics.run_started(job.name, fire_lag)
            active.ctx.log.debug("run started", lag_seconds=lag, fence=active.claimed.lease.fence)
            result = await self.executor.call(
                job.fn,
                is_async=job.is_async,
                kwargs=kwargs,
                ctx=active.ctx,
                time_limit=limit,
                isolation=job.isolation,
                func=job.func,
                max_memory=job.max_memory,
            )
        except asyncio.CancelledError:
            result = None
        finally:
            self.executing -= 1  # the claimer is woken once the outcome (and lease) is written
            if self._backlog and self.capacity >= self._refill_at:
                self._backlog = False
                self.wake_claimer.set()  # or earlier, under load (see __init__)
        duration = time.monotonic() - started
        if self._unstarted:
            # Runs of the same claim wait to begin: let them begin before this one's outcome,
            # line and metrics are recorded (scale: the last of 2,500 began 35% later). The
            # job has ended: a cancel arriving meanwhile must not lose its outcome.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)
        self._record(active, result, duration, lag)

    def _record(self, active: Active, result: Result | None, duration: float, lag: float) -> None:
        run, job = active.claimed.run, active.job
        reason = active.stop_reason
        if reason == "lost":
            log.warning("run abandoned: lease lost", duration_seconds=round(duration, 4))
            self.active.pop(run.id, None)
            self.wake_claimer.set()
            return
        if result is None:
            status, error = "cancelled", None
        else:
            status, error = result.status, result.error
        retry_in = retry_after(
            status=status,
            attempt=run.attempt,
            max_attempts=run.max_attempts,
            stop_reason=reason,
            job=job,
        )
        self.metrics.run_finished(job.name, status, duration)
        log_fn = active.ctx.log.info if status == "succeeded" else active.ctx.log.warning
        log_fn(
            "run finished",
            outcome=status,
            duration_seconds=round(duration, 4),
            lag_seconds=round(lag, 4),
            retry_in=None if retry_in is None else round(retry_in, 3),
            error=None if error is None else f"{error['type']}: {error['message']}",
        )
        if self.policies[job.name].capacity is not None:
            self._unwritten[job.name] += 1
        self.pending.append(
            Outcome(
                lease=active.claimed.lease,
                status=status,  # type: ignore[arg-type]
                error=error,
                reason=reason if status == "cancelled" else None,
                retry_in=retry_in,
            )
        )
        self.wake_recorder.set()

    def _stop_run(self, active: Active, reason: str) -> None:
        if active.stop_reason is None:
            active.stop_reason = reason
            active.ctx.cancelled.set()
            if active.task is not None:
                active.task.cancel()

    # -- recorder -------------------------------------------------------------------------

    async def _recorder(self) -> None:
        backoff = Backoff("recorder", self.metrics.db_error)
        while True:
            await self.wake_recorder.wait()
            self.wake_recorder.clear()
            while self.pending:
                delay = await self._guard(backoff, self._flush)
                if delay:  # a database error: back off, then write them again
                    await asyncio.sleep(delay)

    async def _flush(self) -> float:
        """Write pending outcomes in one transaction; frees their capacity."""
        batch, self.pending = self.pending, []
        if not batch:
            return 0.0
        try:
            written = await self.db(self.store.finish, self.id, batch)
        except BaseException:
            self.pending = batch + self.pending
            raise
        for outcome in batch:
            name = outcome.lease.job_name
            if self.policies[name].capacity is not None:
                self._unwritten[name] -= 1
                if self._unwritten[name] <= 0:
                    del self._unwritten[name]
            if outcome.lease.run_id not in written:
                log.warning("outcome refused: lease was taken over", run_id=outcome.lease.run_id)
            self.active.pop(outcome.lease.run_id, None)
        self.wake_claimer.set()
        return 0.0

    # -- heartbeat ------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        backoff = Backoff("heartbeat", self.metrics.db_error)
        interval = self.config.worker.heartbeat.total_seconds()
        while True:
            delay = await self._guard(backoff, self.heartbeat_once)
            await asyncio.sleep(min(delay, interval))

    async def heartbeat_once(self) -> float:
        """One transaction: renew every lease, reap dead holders' leases, read the catalog.
        Then cancel runs whose lease is gone or whose cancel was asked. Returns the seconds
        until the next pass: `heartbeat`, or sooner when a peer's lease expires before."""
        self.last_heartbeat = time.monotonic()
        checked = set(self.active)  # runs claimed while this pass runs are not judged by it
        self._beats += 1
        housekeeping = self._beats % HOUSEKEEPING_EVERY == 1
        beat = await self.db(
            self.store.heartbeat, self.id, self.lease_ttl, housekeeping=housekeeping
        )
        renewal = beat.renewal
        self.metrics.set_leases(len(renewal.held))
        self.metrics.set_running(self.executing)
        if beat.queue_depth is not None:
            self.metrics.set_queue_depth(beat.queue_depth)
        if not renewal.registered:
            await self.db(self.store.register_worker, self._info())
        for run_id, active in list(self.active.items()):
            if run_id not in checked or active.task is None or active.task.done():
                continue
            if active.stop_reason:
                continue
            if run_id not in renewal.held:
                log.warning("lease lost: cancelling run", run_id=run_id, job=active.job.name)
                self._stop_run(active, "lost")
            elif run_id in renewal.cancel_requested:
                log.info("cancel requested: cancelling run", run_id=run_id, job=active.job.name)
                self._stop_run(active, "cancelled")
        for run in beat.lost:
            self.metrics.run_finished(run.job_name, "lost", 0.0)
            log.warning(
                "took over a lost run",
                run_id=run.id,
                job=run.job_name,
                holder=run.worker_id,
                retried=run.attempt < run.max_attempts,
            )
        if beat.lost:
            self.wake_claimer.set()
        await self._refresh_catalog(beat.catalog)
        if beat.retired:
            log.info("retired jobs no live worker defines", jobs=beat.retired)
        if housekeeping and self.store.dialect == "sqlite":
            await self._warn_remote_peers()
        interval = self.config.worker.heartbeat.total_seconds()
        if beat.next_expiry_in is not None and beat.next_expiry_in < interval:
            return max(beat.next_expiry_in + 0.05, 0.25)  # reap a dead peer's lease at expiry
        return interval

    async def _warn_remote_peers(self) -> None:
        hosts = {w.hostname for w in await self.db(self.store.list_workers)}
        others = hosts - {socket.gethostname()}
        if others and "sqlite-peers" not in self._warned:
            self._warned.add("sqlite-peers")
            log.warning(
                "SQLite is for one host only: workers on other hosts share this file",
                hosts=sorted(others),
            )

    # -- pruner ---------------------------------------------------------------------------

    async def _pruner(self) -> None:
        history = self.config.history
        backoff = Backoff("pruner", self.metrics.db_error)
        await asyncio.sleep(random.uniform(0, 60))
        while True:

            async def once() -> float:
                deleted = await self.db(
                    self.store.prune, older_than=history.retention, keep_last=history.keep_last
                )
                if deleted:
                    log.info("pruned run history", deleted=deleted)
                return 0.0

            delay = await self._guard(backoff, once)
            await asyncio.sleep(delay or history.prune_interval.total_seconds())

    # -- supervision ----------------------------------------------------------------------

    async def _guard(self, backoff: Backoff, once: Callable[[], Awaitable[Any]]) -> Any:
        """Run one pass; on a database error, log it and return the backoff delay."""
        try:
            result = await once()
        except DB_ERRORS as exc:
            return backoff.failed(exc)
        backoff.ok()
        return result


class _Stop(Exception):
    pass


async def _sleep_or(event: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
