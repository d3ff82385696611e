"""The worker daemon: `jobrunner run`. `Worker` starts the services and supervises them.

One small service per module, each an `async def run_once()` (one pass, returns the seconds
until the next) plus a thin `run()` loop, with its configuration and an injected clock in its
constructor, so that each can be run alone:

- `scheduler.Scheduler`: sleeps until the next fire time (a heap), records due slots in one
  statement, ahead of their time;
- `planner.SchedulePlanner`: records the slots of the runtime schedules due soon (kept in
  the database with their next fire times), claimed in batches that peers pass over;
- `notifier.Notifier`: delivers the outbox's notification events (`[[notify]]`), signed,
  retried with backoff, in a thread pool of its own;
- `claimer.Claimer`: claims due queued runs up to free capacity and hands them to the
  `runner.Runner`, which runs each and records its outcome; the claimer wakes `CLAIM_AHEAD`
  before the next due run, so that the claim is done by then and the run begins on time;
- `heartbeat.Heartbeat`: renews all leases and `last_seen` in one transaction, cancels runs
  whose lease is gone or whose cancel was requested, and reaps leases of dead peers;
- `recorder.Recorder`: writes outcomes of runs that finished close together in one transaction;
- `pruner.Pruner`: deletes old run history per `[history]`;
- `watchdog.Watchdog`: stops a run whose lease was not renewed within the renew deadline
  (guarantee 10), with no database call of its own.

They share one small object, the run table (`runs.RunTable`: the runs between claim and
written outcome, and the wake-up events), and the catalog (`catalog.Catalog`). The worker
never builds SQL: the services call the store (`WorkerPort`, blocking, in a small thread pool
of the worker's own). A database outage is logged once per backoff step; services back off
and resume (`backoff`).

The supervisor starts the worker (schema, clock skew, registration, catalog, LISTEN, HTTP),
runs the services in one `asyncio.TaskGroup` (if a service dies, the worker stops loudly),
and on a signal drains: stop claiming, let running jobs finish within `shutdown_grace`, cancel
the rest, write their outcomes, deregister.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from jobrunner import __version__
from jobrunner.config import Config
from jobrunner.errors import ClockSkew
from jobrunner.health import database_ready, probe_loop
from jobrunner.logging import get_logger
from jobrunner.records import Policy, WorkerInfo
from jobrunner.store.engine import DB_ERRORS
from jobrunner.store.ports import WorkerPort
from jobrunner.worker.backoff import Backoff, offload, sleep_or
from jobrunner.worker.catalog import Catalog
from jobrunner.worker.claimer import Claimer
from jobrunner.worker.executor import Executor
from jobrunner.worker.heartbeat import Heartbeat
from jobrunner.worker.http import HttpServer, start_http
from jobrunner.worker.metrics import Metrics
from jobrunner.worker.notifier import Notifier
from jobrunner.worker.planner import SchedulePlanner
from jobrunner.worker.pruner import Pruner
from jobrunner.worker.recorder import Recorder
from jobrunner.worker.runner import Runner
from jobrunner.worker.runs import RunTable
from jobrunner.worker.scheduler import Scheduler
from jobrunner.worker.watchdog import Watchdog

if TYPE_CHECKING:
    from jobrunner.store.listen import Listener

__all__ = ["Worker", "new_worker_id", "policies"]

log = get_logger("jobrunner.worker")


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def policies(config: Config) -> dict[str, Policy]:
    """What the claimer needs to know of each job of the queues this worker serves."""
    return {
        j.name: Policy(
            overlap=j.overlap,
            max_concurrency=j.max_concurrency,
            misfire_grace=j.misfire_grace.total_seconds(),
            keyed=j.concurrency_key is not None,
            max_per_key=j.max_per_key,
            rate=j.rate,
        )
        for j in config.jobs
        if config.worker.serves(j.queue)
    }


class Worker:
    """Starts, supervises and stops the services of one worker process."""

    def __init__(self, config: Config, store: WorkerPort, *, worker_id: str | None = None) -> None:
        self.config = config
        self.store = store
        self.id = worker_id or new_worker_id()
        settings = config.worker
        lease_ttl = settings.lease_ttl.total_seconds()
        jobs = {j.name: j for j in config.jobs}
        claim_policies = policies(config)
        self.executor = Executor(
            settings.threads, processes=settings.processes, import_paths=settings.import_paths
        )
        self.metrics = Metrics(self.id, __version__, config.config_hash)
        self._db_pool = ThreadPoolExecutor(4, thread_name_prefix="jobrunner-db")
        self.db = db = offload(self._db_pool)
        self.runs = runs = RunTable(
            settings.concurrency,
            limited=[n for n, pol in claim_policies.items() if pol.capacity is not None],
        )
        self.catalog = Catalog(config.jobs, store, worker_id=self.id, lease_ttl=lease_ttl, db=db)
        self.scheduler = Scheduler(config.jobs, store, runs, self.catalog, self.metrics, db=db)
        self.planner = SchedulePlanner(config.jobs, store, runs, self.catalog, self.metrics, db=db)
        self.notifier = Notifier(config.notify, store, runs, self.metrics, db=db)
        renew_deadline = settings.renew_deadline
        self.runner = Runner(
            jobs,
            runs,
            self.executor,
            self.metrics,
            worker_id=self.id,
            renew_deadline=renew_deadline,
            max_result_size=settings.max_result_size,
        )
        self.claimer = Claimer(
            claim_policies,
            store,
            runs,
            self.runner,
            self.metrics,
            worker_id=self.id,
            lease_ttl=lease_ttl,
            poll_interval=settings.poll_interval.total_seconds(),
            db=db,
        )
        self.heartbeat = Heartbeat(
            store,
            runs,
            self.catalog,
            self.metrics,
            info=self._info(),
            lease_ttl=lease_ttl,
            interval=settings.heartbeat.total_seconds(),
            renew_deadline=renew_deadline,
            db=db,
        )
        self.watchdog = Watchdog(runs, self.metrics, renew_deadline=renew_deadline)
        self.recorder = Recorder(store, runs, self.metrics, worker_id=self.id, db=db)
        self.pruner = Pruner(config.history, store, self.metrics, db=db)
        self._http: HttpServer | None = None
        self._listener: Listener | None = None
        self._signals = 0

    # -- start ----------------------------------------------------------------------------

    async def start(self) -> bool:
        """Wait for the database, then check schema and clock, register, publish the
        catalog, load slot cursors; listen, start the HTTP endpoint. False when a signal
        came while it waited."""
        if not await self._wait_for_database():
            return False
        store = self.store
        if store.dialect == "postgresql":
            self._listen()
        if any(j.isolation == "process" for j in self.config.jobs):
            await self.executor.process_pool.warm()
        self._start_http()
        log.info(
            "worker started",
            version=__version__,
            jobs=len(self.config.jobs),
            concurrency=self.config.worker.concurrency,
            database=self.config.database.url,
            queues=list(self.config.worker.queues or ["*"]),
        )
        self._warn_unknown_queues()
        return True

    def _warn_unknown_queues(self) -> None:
        """A queue in `[worker] queues` that no job of the file uses is likely misspelt."""
        used = sorted({j.queue for j in self.config.jobs})
        for name in self.config.worker.queues or ():
            if name not in used:
                log.warning(
                    "worker.queues names a queue no job uses: this worker runs nothing of it",
                    queue=name,
                    queues_of_jobs=used,
                )

    async def _wait_for_database(self) -> bool:
        """Run the start-up steps that need the database; while it is unreachable, retry them
        with a backoff (one log line per step, with the reason) for up to `[database]
        startup_timeout`, then give up with the last error. False if a signal came first."""
        timeout = self.config.database.startup_timeout.total_seconds()
        backoff = Backoff("startup", self.metrics.db_error, log_every=1)
        give_up = time.monotonic() + timeout
        while not self.runs.stopping.is_set():
            try:
                await self._prepare()
            except DB_ERRORS as exc:
                left = give_up - time.monotonic()
                if left <= 0:
                    if timeout > 0:
                        log.error(
                            "database still unavailable at start: giving up",
                            waited_seconds=round(timeout, 1),
                        )
                    raise
                await sleep_or(self.runs.stopping, min(backoff.failed(exc), left))
            else:
                backoff.ok()
                return True
        log.info("signal received while waiting for the database: not started")
        return False

    async def _prepare(self) -> None:
        """The start-up steps that need the database; each can be repeated."""
        db, store = self.db, self.store
        await db(store.prepare_schema)
        await self._check_clock()
        await db(store.register_worker, self._info())
        await self.catalog.publish()
        await self.scheduler.load()
        await db(store.reap, lease_ttl=self.config.worker.lease_ttl.total_seconds())
        await self.catalog.refresh()

    async def _check_clock(self) -> None:
        db_now = await self.db(self.store.now)
        offset = (datetime.now(UTC) - db_now).total_seconds()
        log.info("clock offset to database", offset_seconds=round(offset, 3))
        limit = self.config.worker.max_clock_skew.total_seconds()
        if abs(offset) > limit:
            raise ClockSkew(
                f"host clock is {offset:+.1f}s off the database clock, more than "
                f"worker.max_clock_skew ({limit:g}s): fix NTP on this host"
            )

    def _listen(self) -> None:
        """LISTEN for enqueues on a connection of its own: they wake the claimer at once."""
        from jobrunner.store.listen import Listener  # loads psycopg: not for SQLite

        loop = asyncio.get_running_loop()
        wake_claimer = self.runs.wake_claimer

        def wake(_payload: str) -> None:
            loop.call_soon_threadsafe(wake_claimer.set)

        self._listener = Listener(self.config.database.listen_url, wake)
        self._listener.start()
        self.claimer.listening = True

    def _start_http(self) -> None:
        http = self.config.http
        if http is None:
            return
        loop = asyncio.get_running_loop()
        stale_after = max(3 * self.config.worker.heartbeat.total_seconds(), 30.0)
        heartbeat = self.heartbeat

        def healthy() -> tuple[bool, str]:
            ok, why = probe_loop(loop)
            age = heartbeat.monotonic() - heartbeat.last_beat
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
            queues=self.config.worker.queues,
        )

    # -- run and stop ---------------------------------------------------------------------

    async def run(self) -> int:
        """Run until signalled; returns the exit code."""
        structlog.contextvars.bind_contextvars(worker_id=self.id)
        self._install_signals()
        if not await self.start():
            self.executor.shutdown()
            self._db_pool.shutdown(wait=False)
            return 0
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.scheduler.run())
                tg.create_task(self.planner.run())
                tg.create_task(self.notifier.run())
                tg.create_task(self.claimer.run())
                tg.create_task(self.heartbeat.run())
                tg.create_task(self.recorder.run())
                tg.create_task(self.pruner.run())
                tg.create_task(self.watchdog.run())
                await self.runs.stopping.wait()
                await self._drain()
                await self.notifier.last_pass()
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
        log.info("signal received: draining", signal=sig.name, running=len(self.runs.active))
        self.request_stop()

    def request_stop(self) -> None:
        self.runs.request_stop()

    async def _drain(self) -> None:
        """Let running jobs finish within `shutdown_grace`, then cancel the rest."""
        await self._try_db(self.store.set_worker_state, self.id, "draining")
        active = self.runs.active
        tasks = [a.task for a in active.values() if a.task is not None]
        grace = self.config.worker.shutdown_grace.total_seconds()
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=grace)
            for run in list(active.values()):
                if run.task in still:
                    run.stop("shutdown")
            if still:
                await asyncio.wait(still, timeout=5)
        await self.recorder.run_once()

    async def _finish(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        if self._http is not None:
            self._http.stop()
        await self.recorder.run_once()
        await self._try_db(self.store.deregister_worker, self.id)
        self.notifier.close()
        self.executor.shutdown()
        self._db_pool.shutdown(wait=False)
        log.info("worker stopped")

    async def _try_db(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await self.db(fn, *args)
        except DB_ERRORS as exc:
            log.warning("database call failed during shutdown", call=fn.__name__, error=str(exc))
            return None


class _Stop(Exception):
    pass
