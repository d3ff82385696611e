"""Run one job call: async jobs on the loop, sync jobs in a bounded thread pool or, with
`isolation = "process"`, in a pool of child processes (`jobrunner.worker.isolation`).

Sync jobs run through `contextvars.copy_context().run`, so the run's log context follows them
into the thread. Python cannot stop a thread: at a timeout or cancel a sync job's
`ctx.cancelled` event is set and the run is recorded at once, but its thread stays busy until
the function returns. A child process is killed instead (SIGTERM, then SIGKILL), so its place
comes back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from jobrunner.context import JobContext, Result, error_info

if TYPE_CHECKING:
    from jobrunner.worker.isolation import ProcessPool

Isolation = Literal["thread", "process"]

_SUCCEEDED = Result(status="succeeded")  # immutable: one for every run that succeeds


_NO_DEADLINE = contextlib.nullcontext()


class Executor:
    """Calls job functions; at most `threads` sync jobs run at once in threads and at most
    `processes` in child processes (started on first use)."""

    def __init__(
        self, threads: int, *, processes: int = 2, import_paths: Sequence[str | Path] = ()
    ) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="jobrunner-job")
        self.processes = processes
        self.import_paths = tuple(import_paths)
        self._process_pool: ProcessPool | None = None

    @property
    def process_pool(self) -> ProcessPool:
        if self._process_pool is None:
            from jobrunner.worker.isolation import ProcessPool

            self._process_pool = ProcessPool(self.processes, import_paths=self.import_paths)
        return self._process_pool

    async def call(
        self,
        fn: Callable[..., Any],
        *,
        is_async: bool,
        kwargs: Mapping[str, Any],
        ctx: JobContext,
        time_limit: float | None,
        isolation: Isolation = "thread",
        func: str | None = None,
        max_memory: int | None = None,
    ) -> Result:
        """Call `fn(**kwargs)` within `time_limit` seconds and say how it ended.

        With `isolation="process"` the function is imported in a child process by its
        `func` string ("module:attr") and called there, under RLIMIT_AS `max_memory` bytes;
        a `ctx` in `kwargs` is rebuilt in the child.

        Cancellation (lease lost, cancel request, shutdown) propagates as CancelledError after
        setting `ctx.cancelled` (and killing a child process), so the caller decides what to
        record.
        """
        # No deadline object without a time limit: `asyncio.timeout(None)` still cost about
        # 5% of the worker's CPU per run in a drain.
        deadline = None if time_limit is None else asyncio.timeout(time_limit)
        try:
            async with deadline or _NO_DEADLINE:
                if isolation == "process":
                    return await self._in_process(fn, func, kwargs, ctx, max_memory)
                if is_async:
                    value = await fn(**kwargs)
                else:
                    call = functools.partial(contextvars.copy_context().run, fn, **kwargs)
                    value = await asyncio.get_running_loop().run_in_executor(self.pool, call)
        except asyncio.CancelledError:
            ctx.cancelled.set()
            raise
        except TimeoutError as exc:
            if deadline is not None and deadline.expired():
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
        return _SUCCEEDED if value is None else Result(status="succeeded", value=value)

    async def _in_process(
        self,
        fn: Callable[..., Any],
        func: str | None,
        kwargs: Mapping[str, Any],
        ctx: JobContext,
        max_memory: int | None,
    ) -> Result:
        args = dict(kwargs)
        context = None
        if args.get("ctx") is ctx:
            del args["ctx"]
            context = {f.name: getattr(ctx, f.name) for f in fields(ctx)}
            del context["log"], context["cancelled"]
        name = func or f"{fn.__module__}:{fn.__qualname__}"
        return await self.process_pool.run(name, args, context=context, max_memory=max_memory)

    def shutdown(self) -> None:
        """Stop the thread pool (running threads finish on their own) and kill every child."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self._process_pool is not None:
            self._process_pool.shutdown()
