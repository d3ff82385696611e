"""Run one job call: async jobs on the loop, sync jobs in a bounded thread pool.

Sync jobs run through `contextvars.copy_context().run`, so the run's log context follows them
into the thread. Python cannot stop a thread: at a timeout or cancel a sync job's
`ctx.cancelled` event is set and the run is recorded at once, but its thread stays busy until
the function returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Status = Literal["succeeded", "failed", "timed_out"]


@dataclass(frozen=True, kw_only=True)
class JobContext:
    """What a job that declares a `ctx` parameter receives."""

    run_id: int
    job_name: str
    scheduled_for: datetime | None
    attempt: int
    worker_id: str
    fence: int
    correlation_id: str | None
    log: Any
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, kw_only=True)
class Result:
    status: Status
    error: dict[str, str] | None = None


def error_info(exc: BaseException) -> dict[str, str]:
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return {
        "type": name,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


class Executor:
    """Calls job functions; at most `threads` sync jobs run at once."""

    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="jobrunner-job")

    async def call(
        self,
        fn: Callable[..., Any],
        *,
        is_async: bool,
        kwargs: Mapping[str, Any],
        ctx: JobContext,
        time_limit: float | None,
    ) -> Result:
        """Call `fn(**kwargs)` within `time_limit` seconds and say how it ended.

        Cancellation (lease lost, cancel request, shutdown) propagates as CancelledError after
        setting `ctx.cancelled`, so the caller decides what to record.
        """
        try:
            async with asyncio.timeout(time_limit) as deadline:
                if is_async:
                    await fn(**kwargs)
                else:
                    call = functools.partial(contextvars.copy_context().run, fn, **kwargs)
                    await asyncio.get_running_loop().run_in_executor(self.pool, call)
        except asyncio.CancelledError:
            ctx.cancelled.set()
            raise
        except TimeoutError as exc:
            if deadline.expired():
                ctx.cancelled.set()
                return Result(
                    status="timed_out",
                    error={
                        "type": "TimeoutError",
                        "message": f"timed out after {time_limit}s",
                        "traceback": "",
                    },
                )
            return Result(status="failed", error=error_info(exc))
        except Exception as exc:
            return Result(status="failed", error=error_info(exc))
        return Result(status="succeeded")

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
