"""How the worker's services call the store: off the event loop, and with a backoff when the
database is unavailable.

- `offload(pool)`: runs a blocking store call in a small thread pool of the worker's own (the
  store is synchronous; the event loop keeps running jobs meanwhile).
- `Backoff.guard(once)`: runs one pass of a service; on a database error (`DB_ERRORS`) it
  logs once per backoff step (then about once a minute) and returns the delay, so that the
  service sleeps and tries again instead of dying (guarantee 7). The first pass that works
  again logs how long the outage lasted.
- `sleep_or(event, seconds)`: a service's sleep between passes, cut short by a wake-up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from jobrunner.logging import get_logger
from jobrunner.store.engine import DB_ERRORS

T = TypeVar("T")
log = get_logger("jobrunner.worker")


class Offload(Protocol):
    """`await db(fn, *args, **kwargs)`: `fn(*args, **kwargs)` in a thread, off the loop."""

    def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Awaitable[T]: ...


def offload(pool: Executor | None = None) -> Offload:
    """Blocking store calls in `pool` (None: the event loop's default executor)."""

    async def db(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, lambda: fn(*args, **kwargs))

    return db


@dataclass
class Backoff:
    """Exponential backoff for database errors; logs once per step."""

    name: str
    on_error: Callable[[], None] | None = None
    monotonic: Callable[[], float] = time.monotonic
    step: int = 0
    failing_since: float | None = field(default=None)
    log_every: int = 12  # once the delay is capped, log every n-th step (12: about a minute)

    delay_cap = 5.0

    def delay(self) -> float:
        return min(0.5 * 2.0**self.step, self.delay_cap)

    def failed(self, exc: BaseException) -> float:
        delay = self.delay()
        self.failing_since = self.failing_since or self.monotonic()
        if self.on_error is not None:
            self.on_error()
        growing = delay < self.delay_cap
        if growing or self.step % self.log_every == 0:  # each step, then every n-th
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
                outage_seconds=round(self.monotonic() - self.failing_since, 1),
            )
        self.step, self.failing_since = 0, None

    async def guard(self, once: Callable[[], Awaitable[T]]) -> T | float:
        """Run one pass; on a database error, log it and return the backoff delay."""
        try:
            result = await once()
        except DB_ERRORS as exc:
            return self.failed(exc)
        self.ok()
        return result


async def sleep_or(event: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `event` is set meanwhile."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
