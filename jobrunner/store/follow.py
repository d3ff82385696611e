"""Follow a run to its end: `Client.wait` and `AsyncClient.wait`.

A run is followed through its retries: the wait ends when its newest attempt is final. On
PostgreSQL the caller LISTENs on `DONE_CHANNEL`, which every transaction that writes
outcomes notifies, and reads the run again on each notification (at most every `NAP`) or
after `POLL` without one (a notification can be lost through PgBouncer in transaction mode);
on SQLite it polls, from `NAP` up to `POLL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from jobrunner.errors import BadInput, WaitTimeout
from jobrunner.records import Run
from jobrunner.store.history import run_attempts
from jobrunner.store.queue import DONE_CHANNEL
from jobrunner.store.sql import Op
from jobrunner.store.tables import FINAL_STATUSES

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

NAP = 0.05  # seconds: the least time between two reads of the run
POLL = 1.0  # seconds: the most time between two reads of the run


def newest_attempt(run_id: int) -> Op[Run]:
    """The newest attempt of the run (RunNotFound if there is no such run)."""
    return (yield from run_attempts(run_id))[-1]


def check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and (isinstance(timeout, bool) or not timeout >= 0):
        raise BadInput(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
    return timeout


def _timed_out(run: Run, timeout: float | None) -> WaitTimeout:
    return WaitTimeout(
        f"run {run.id} of {run.job_name} is still {run.status} (attempt {run.attempt}) "
        f"after {timeout}s"
    )


def wait_sync(
    engine: sa.Engine, read: Callable[[Op[Run]], Run], run_id: int, timeout: float | None
) -> Run:
    """Block until the run's newest attempt is final (WaitTimeout after `timeout` s)."""
    check_timeout(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    with _listening(engine) as pause:
        nap = NAP
        while True:
            run = read(newest_attempt(run_id))
            if run.status in FINAL_STATUSES:
                return run
            left = POLL if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise _timed_out(run, timeout)
            started = time.monotonic()
            pause(min(left, POLL if pause is not time.sleep else nap))
            time.sleep(max(0.0, NAP - (time.monotonic() - started)))  # read at most every NAP
            nap = min(nap * 2, POLL)


@contextlib.contextmanager
def _listening(engine: sa.Engine) -> Iterator[Callable[[float], Any]]:
    """A function that waits up to N seconds for a notification (PostgreSQL), else sleeps."""
    if engine.dialect.name != "postgresql":
        yield time.sleep
        return
    raw = engine.raw_connection()
    try:
        conn: Any = raw.driver_connection
        conn.rollback()
        conn.autocommit = True
        conn.execute(f"LISTEN {DONE_CHANNEL}")

        def pause(seconds: float) -> None:
            for _ in conn.notifies(timeout=seconds, stop_after=1):
                pass

        yield pause
        conn.execute(f"UNLISTEN {DONE_CHANNEL}")
        conn.autocommit = False
    finally:
        raw.close()  # back to the pool (its reset ends any transaction)


async def wait_async(
    engine: AsyncEngine,
    read: Callable[[Op[Run]], Any],
    run_id: int,
    timeout: float | None,  # noqa: ASYNC109 (the documented signature of AsyncClient.wait)
) -> Run:
    """As `wait_sync`, on the event loop."""
    check_timeout(timeout)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    async with _listening_async(engine) as pause:
        nap = NAP
        while True:
            run: Run = await read(newest_attempt(run_id))
            if run.status in FINAL_STATUSES:
                return run
            left = POLL if deadline is None else deadline - loop.time()
            if left <= 0:
                raise _timed_out(run, timeout)
            started = loop.time()
            await pause(min(left, POLL if pause is not asyncio.sleep else nap))
            await asyncio.sleep(max(0.0, NAP - (loop.time() - started)))
            nap = min(nap * 2, POLL)


@contextlib.asynccontextmanager
async def _listening_async(engine: AsyncEngine) -> AsyncIterator[Callable[[float], Any]]:
    if engine.dialect.name != "postgresql":
        yield asyncio.sleep
        return
    async with engine.connect() as sa_conn:
        raw = await sa_conn.get_raw_connection()
        conn: Any = raw.driver_connection
        await conn.rollback()
        await conn.set_autocommit(True)
        await conn.execute(f"LISTEN {DONE_CHANNEL}")

        async def pause(seconds: float) -> None:
            async for _ in conn.notifies(timeout=seconds, stop_after=1):
                pass

        try:
            yield pause
        finally:
            await conn.execute(f"UNLISTEN {DONE_CHANNEL}")
            await conn.set_autocommit(False)
