"""Clients for web apps: enqueue runs by job name and observe them. They never run jobs.

`Client` is synchronous (PostgreSQL or SQLite); `AsyncClient` runs on SQLAlchemy's async
engine with psycopg's async driver (PostgreSQL). Both run the very same operations of the
store (`jobrunner.store.queue`, `.history`, `.catalog`: `ClientPort`), and both take enqueue's
options as one definition, `EnqueueOptions`. Both refuse an unknown job name (`JobNotFound`)
and arguments that are not a JSON object (`InvalidArguments`), and never import or evaluate
anything a caller sends::

    from jobrunner import AsyncClient

    client = AsyncClient.from_url("postgresql://app@db/app")
    run = await client.enqueue("send-report", {"user_id": 42}, idempotency_key="report-42")
    run = await client.get_run(run.id)
    await client.close()
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, Unpack

import sqlalchemy as sa
import structlog

import jobrunner.tracing as tracing
from jobrunner.errors import BadInput
from jobrunner.records import CatalogEntry, Run, ScheduleRow
from jobrunner.runtime import MAX_SCHEDULES_LIST, ScheduleChanges, schedule_changes
from jobrunner.store import catalog, follow, history, queue, redrive
from jobrunner.store import schedules as schedules_ops
from jobrunner.store.access import ClientStore, read
from jobrunner.store.engine import create_engine, postgres_options
from jobrunner.store.history import RunFilters
from jobrunner.store.params import Signatures
from jobrunner.store.queue import BulkOptions, EnqueueOptions, check_options
from jobrunner.store.sql import Op, run_async

if TYPE_CHECKING:  # sqlalchemy.ext.asyncio needs greenlet: imported only when used
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["AsyncClient", "BulkOptions", "Client", "EnqueueOptions", "ScheduleChanges"]

T = TypeVar("T")

MAX_LIST_LIMIT = 10_000


CorrelationSource = str | ContextVar[Any] | None
"""Where a client finds the current request's correlation id when `enqueue` is not given one:
a key of structlog's contextvars (default `"correlation_id"`), a `ContextVar`, or None (off)."""


def current_correlation_id(source: CorrelationSource) -> str | None:
    """The correlation id bound in the caller's context, if any."""
    if source is None:
        return None
    if isinstance(source, ContextVar):
        value = source.get(None)
    else:
        value = structlog.contextvars.get_contextvars().get(source)
    return None if value is None else str(value)[:200]


def _check_limit(limit: int, most: int = MAX_LIST_LIMIT) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise BadInput(f"limit must be an integer from 1 to {most}, got {limit!r}")
    return limit


class _Correlated:
    """What both clients add to an enqueue's options: the caller's correlation id and, with
    the `otel` extra, its current span (`jobrunner.tracing`)."""

    correlation_from: CorrelationSource

    def _options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        given = dict(options)
        given["correlation_id"] = given.get("correlation_id") or current_correlation_id(
            self.correlation_from
        )
        if given.get("traceparent") is None and tracing.ENABLED:
            given["traceparent"] = tracing.current_traceparent()
        return given


class _Schedules:
    """The runtime schedule methods of `Client` (`jobrunner.store.schedules`)."""

    _store: ClientStore

    def create_schedule(
        self,
        job: str,
        cron: str,
        *,
        key: str,
        timezone: str | None = None,
        kwargs: Mapping[str, Any] | None = None,
        catch_up: str | None = None,
        overlap: str | None = None,
    ) -> ScheduleRow:
        """A schedule of the catalogued `job` made at runtime, keyed by (job, `key`): its
        slots go through the slot ledger as a TOML schedule's, one start each across
        replicas. `cron`, `timezone` (default the job's), `catch_up` and `overlap` (default
        the job's) are checked as the config's, `kwargs` as an enqueue's; InvalidArguments
        (also for a key in use), JobNotFound."""
        changes = schedule_changes(cron, timezone, kwargs, catch_up, overlap)
        return self._store.create_schedule(job, key, changes)

    def create_schedules(self, job: str, schedules: Sequence[Mapping[str, Any]]) -> int:
        """Many schedules of `job` in one transaction (one statement on PostgreSQL), all or
        none: each a mapping with `key`, `cron` and any of `timezone`, `kwargs`, `catch_up`,
        `overlap`, checked as `create_schedule`'s (InvalidArguments names the element, a key
        in use is ScheduleExists). Returns how many were created."""
        return self._store.create_schedules(job, schedules)

    def update_schedule(
        self, job: str, key: str, **changes: Unpack[ScheduleChanges]
    ) -> ScheduleRow:
        """Change a live schedule (`ScheduleChanges`; None: back to the job's); it takes
        effect at its next slot not yet claimed. ScheduleNotFound, InvalidArguments."""
        return self._store.update_schedule(job, key, changes)

    def pause_schedule(self, job: str, key: str) -> ScheduleRow:
        """Its slots are recorded skipped (`paused`) until it is resumed."""
        return self._store.set_schedule_paused(job, key, True)

    def resume_schedule(self, job: str, key: str) -> ScheduleRow:
        return self._store.set_schedule_paused(job, key, False)

    def delete_schedule(self, job: str, key: str) -> ScheduleRow:
        """End the schedule; it is kept as `deleted` (listed with `ended=True`)."""
        return self._store.delete_schedule(job, key)

    def get_schedule(self, job: str, key: str) -> ScheduleRow:
        """One schedule, whatever its status (ScheduleNotFound)."""
        return self._store.get_schedule(job, key)

    def list_schedules(
        self, job: str | None = None, *, ended: bool = False, limit: int = MAX_SCHEDULES_LIST
    ) -> list[ScheduleRow]:
        """Live schedules (active, paused) by job and key, at most `limit`; with `ended`
        also the deleted and retired ones."""
        return self._store.list_schedules(
            job, ended=ended, limit=_check_limit(limit, MAX_SCHEDULES_LIST)
        )


class _AsyncSchedules:
    """The runtime schedule methods of `AsyncClient`, as `Client`'s."""

    dialect: str
    signatures: Signatures

    async def _read(self, op: Op[T]) -> T:
        raise NotImplementedError

    async def _write(self, op: Op[T]) -> T:
        raise NotImplementedError

    async def create_schedule(
        self,
        job: str,
        cron: str,
        *,
        key: str,
        timezone: str | None = None,
        kwargs: Mapping[str, Any] | None = None,
        catch_up: str | None = None,
        overlap: str | None = None,
    ) -> ScheduleRow:
        """As `Client.create_schedule`."""
        changes = schedule_changes(cron, timezone, kwargs, catch_up, overlap)
        op = schedules_ops.create_schedule(self.dialect, job, key, changes, self.signatures)
        return await self._write(op)

    async def create_schedules(self, job: str, schedules: Sequence[Mapping[str, Any]]) -> int:
        """As `Client.create_schedules`."""
        op = schedules_ops.create_schedules(self.dialect, job, schedules, self.signatures)
        return await self._write(op)

    async def update_schedule(
        self, job: str, key: str, **changes: Unpack[ScheduleChanges]
    ) -> ScheduleRow:
        """As `Client.update_schedule`."""
        op = schedules_ops.update_schedule(self.dialect, job, key, changes, self.signatures)
        return await self._write(op)

    async def pause_schedule(self, job: str, key: str) -> ScheduleRow:
        """As `Client.pause_schedule`."""
        return await self._write(schedules_ops.set_schedule_paused(self.dialect, job, key, True))

    async def resume_schedule(self, job: str, key: str) -> ScheduleRow:
        """As `Client.resume_schedule`."""
        return await self._write(schedules_ops.set_schedule_paused(self.dialect, job, key, False))

    async def delete_schedule(self, job: str, key: str) -> ScheduleRow:
        """As `Client.delete_schedule`."""
        return await self._write(schedules_ops.delete_schedule(self.dialect, job, key))

    async def get_schedule(self, job: str, key: str) -> ScheduleRow:
        """As `Client.get_schedule`."""
        return await self._read(schedules_ops.get_schedule(job, key))

    async def list_schedules(
        self, job: str | None = None, *, ended: bool = False, limit: int = MAX_SCHEDULES_LIST
    ) -> list[ScheduleRow]:
        """As `Client.list_schedules`."""
        checked = _check_limit(limit, MAX_SCHEDULES_LIST)
        return await self._read(schedules_ops.list_schedules(job, ended=ended, limit=checked))


class Client(_Correlated, _Schedules):
    """A synchronous client over one database (PostgreSQL or SQLite).

    Build it with `Client.from_url(url)` (the client owns and disposes its engine) or
    `Client(engine)` around an existing SQLAlchemy `Engine` (the caller keeps owning it).
    Each call is one short transaction; the client is thread-safe like its engine.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        owns_engine: bool = False,
        correlation_from: CorrelationSource = "correlation_id",
    ) -> None:
        self._store = ClientStore(engine)
        self._owns_engine = owns_engine
        self.correlation_from = correlation_from

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        correlation_from: CorrelationSource = "correlation_id",
        **engine_kwargs: Any,
    ) -> Self:
        """A client with its own engine (`postgresql://…` or `sqlite:///path`)."""
        engine = create_engine(url, **engine_kwargs)
        return cls(engine, owns_engine=True, correlation_from=correlation_from)

    @property
    def engine(self) -> sa.Engine:
        return self._store.engine

    def enqueue(
        self,
        name: str,
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> Run:
        """Queue a run of the catalogued job `name`; returns it (status `queued`).

        Options (`EnqueueOptions`): `run_at` (timezone-aware) delays it; a repeated
        `idempotency_key` (per job) returns the run the first call created; without
        `correlation_id`, the one bound in the caller's context is stored (see
        `correlation_from`); without `traceparent`, the caller's current OpenTelemetry span
        (with the `otel` extra). Raises JobNotFound, InvalidArguments, BadInput.
        """
        return self._store.enqueue(name, kwargs, **self._options(options))

    def enqueue_many(
        self,
        name: str,
        kwargs_list: Sequence[Mapping[str, Any] | None],
        **options: Unpack[BulkOptions],
    ) -> list[int]:
        """Queue one run of the catalogued job `name` per element of `kwargs_list` (each a
        JSON object or None) in one statement, all or none; returns their ids in order.
        Options as `enqueue`'s, with `idempotency_keys` (one per element) for its
        `idempotency_key` (`BulkOptions`). Raises JobNotFound,
        InvalidArguments (naming the element)."""
        return self._store.enqueue_many(name, kwargs_list, **self._options(options))

    def get_run(self, run_id: int) -> Run:
        """The run with this id (RunNotFound if there is none)."""
        return self._store.get_run(run_id)

    def wait(self, run_id: int, timeout: float | None = None) -> Run:
        """Block until the run ends, following its retries, and return its final attempt
        (with its `result`); WaitTimeout after `timeout` seconds (None: no limit).
        PostgreSQL wakes the wait when outcomes are written (LISTEN/NOTIFY); SQLite polls."""
        engine = self._store.engine
        return follow.wait_sync(engine, functools.partial(read, engine), run_id, timeout)

    def list_runs(self, *, limit: int = 50, **filters: Unpack[RunFilters]) -> list[Run]:
        """Runs newest first, filtered by `RunFilters` (job, status, since, correlation id,
        queue, priority)."""
        check_options(filters, RunFilters, "list_runs")
        return self._store.list_runs(limit=_check_limit(limit), **filters)

    def list_jobs(self) -> list[CatalogEntry]:
        """The jobs the workers published, by name."""
        return self._store.list_jobs()

    def get_job(self, name: str) -> CatalogEntry:
        """One catalogued job (JobNotFound if there is none)."""
        return self._store.get_job(name)

    def cancel_run(self, run_id: int) -> Run:
        """Cancel a queued run at once, or ask the worker of a running run to cancel it at its
        next heartbeat (`cancel_requested`). A finished run is returned unchanged."""
        return self._store.cancel_run(run_id)

    def retry_run(self, run_id: int) -> Run:
        """Queue the run again as a new attempt linked to it (`retry_of`), if its newest
        attempt ended failed, timed_out, lost, cancelled or skipped (else RunNotRetryable);
        returns the new run."""
        return self._store.retry_run(run_id)

    def close(self) -> None:
        """Dispose the engine if the client created it."""
        if self._owns_engine:
            self._store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Correlated, _AsyncSchedules):
    """An asyncio client (PostgreSQL through psycopg's async driver).

    Build it with `AsyncClient.from_url(url)` (owns its engine) or `AsyncClient(engine)`
    around an existing `AsyncEngine` (the caller keeps owning it). It runs the same statements
    as the `Client`, so both clients behave alike.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        owns_engine: bool = False,
        correlation_from: CorrelationSource = "correlation_id",
    ) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._owns_engine = owns_engine
        self.signatures = Signatures()  # the jobs' published parameters, as last read
        self.correlation_from = correlation_from

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        correlation_from: CorrelationSource = "correlation_id",
        **engine_kwargs: Any,
    ) -> Self:
        """A client with its own async engine for a `postgresql://…` URL."""
        parsed = sa.make_url(url)
        if parsed.get_backend_name() not in ("postgresql", "postgres"):
            raise BadInput(
                f"AsyncClient needs a PostgreSQL URL (postgresql://…), got "
                f"{parsed.render_as_string(hide_password=True)!r}; use Client for SQLite"
            )
        from sqlalchemy.ext.asyncio import create_async_engine

        parsed, connect_args = postgres_options(parsed)
        engine_kwargs.setdefault("pool_pre_ping", True)
        engine_kwargs.setdefault("connect_args", connect_args)
        engine = create_async_engine(parsed, **engine_kwargs)
        return cls(engine, owns_engine=True, correlation_from=correlation_from)

    async def _read(self, op: Op[T]) -> T:
        async with self.engine.connect() as conn:
            return await run_async(conn, op)

    async def _write(self, op: Op[T]) -> T:
        async with self.engine.begin() as conn:
            return await run_async(conn, op)

    async def _write_one(self, op: Op[T]) -> T:
        """An operation of one statement (reads after it only): autocommit on PostgreSQL,
        which spares the BEGIN and COMMIT round trips."""
        async with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                return await run_async(conn, op)
            async with conn.begin():
                return await run_async(conn, op)

    async def enqueue(
        self,
        name: str,
        kwargs: Mapping[str, Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> Run:
        """As `Client.enqueue`."""
        op = queue.enqueue(self.dialect, name, kwargs, self.signatures, **self._options(options))
        if self.signatures.may_be_unique(name):  # its lock must last until the insert
            return await self._write(op)
        return await self._write_one(op)

    async def enqueue_many(
        self,
        name: str,
        kwargs_list: Sequence[Mapping[str, Any] | None],
        **options: Unpack[BulkOptions],
    ) -> list[int]:
        """As `Client.enqueue_many`."""
        given = self._options(options)
        op = queue.enqueue_many(self.dialect, name, kwargs_list, self.signatures, **given)
        return await self._write(op)

    async def get_run(self, run_id: int) -> Run:
        """As `Client.get_run`."""
        return await self._read(history.get_run(run_id))

    async def wait(self, run_id: int, timeout: float | None = None) -> Run:  # noqa: ASYNC109
        """As `Client.wait`."""
        return await follow.wait_async(self.engine, self._read, run_id, timeout)

    async def list_runs(self, *, limit: int = 50, **filters: Unpack[RunFilters]) -> list[Run]:
        """As `Client.list_runs`."""
        check_options(filters, RunFilters, "list_runs")
        return await self._read(history.list_runs(limit=_check_limit(limit), **filters))

    async def list_jobs(self) -> list[CatalogEntry]:
        """As `Client.list_jobs`."""
        return await self._read(catalog.list_jobs())

    async def get_job(self, name: str) -> CatalogEntry:
        """As `Client.get_job`."""
        return await self._read(catalog.get_job(name))

    async def cancel_run(self, run_id: int) -> Run:
        """As `Client.cancel_run`."""
        return await self._write(queue.cancel_run(self.dialect, run_id))

    async def retry_run(self, run_id: int) -> Run:
        """As `Client.retry_run`."""
        return await self._write(redrive.retry_run(self.dialect, run_id))

    async def close(self) -> None:
        """Dispose the engine if the client created it."""
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
