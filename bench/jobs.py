"""Job functions the benchmarks run (jobrunner's `func = "bench.jobs:..."`)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any


async def noop() -> None:
    """Does nothing: what a throughput benchmark measures is the runner around it."""


def noop_sync() -> None:
    """Does nothing, in the worker's thread pool."""


async def tenant_noop(tenant: str) -> None:
    """`noop` with the kwarg a concurrency key or rate limit groups its runs by."""


async def fails(tenant: str) -> None:
    """`tenant_noop` that fails: each run is a `failed` (and `exhausted`) event."""
    raise RuntimeError(f"bench failure for {tenant}")


async def small_result(tenant: str) -> dict[str, Any]:
    """`tenant_noop` returning a small JSON value (about 40 bytes), stored on its run."""
    return {"tenant": tenant, "ok": True, "n": 42}


KB = "x" * 1000


async def kb_result(tenant: str) -> dict[str, Any]:
    """`tenant_noop` returning about 1 KB of JSON, stored on its run."""
    return {"tenant": tenant, "text": KB}


async def record(ctx: Any) -> None:
    """Appends one line per start to $BENCH_STARTS (O_APPEND), to count duplicate starts and
    to time when the job function began (`t`, this host's clock)."""
    began = time.time()
    path = os.environ.get("BENCH_STARTS")
    if not path:
        return
    _append(
        path,
        {
            "t": began,
            "job": ctx.job_name,
            "run_id": ctx.run_id,
            "slot": ctx.scheduled_for.isoformat() if ctx.scheduled_for else None,
            "attempt": ctx.attempt,
            "worker": ctx.worker_id,
        },
    )


def _append(path: str, row: dict[str, Any]) -> None:
    """One JSON line appended to `path` in one write (O_APPEND: replicas share the file)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(row) + "\n").encode())
    finally:
        os.close(fd)


async def sleep(seconds: float = 600.0) -> None:
    """A long run, to kill the replica that runs it."""
    await asyncio.sleep(seconds)


def _mark(ctx: Any, event: str) -> None:
    """One line per event to $BENCH_EVENTS: run id, attempt, event, time."""
    row = {"t": time.time(), "run_id": ctx.run_id, "attempt": ctx.attempt, "event": event}
    _append(os.environ["BENCH_EVENTS"], row)


async def ticking(ctx: Any, seconds: float = 14.0) -> None:
    """A start, then a tick every 20 ms while it runs: its last line says when it stopped."""
    _mark(ctx, "start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        _mark(ctx, "tick")
    _mark(ctx, "finish")


def ticking_sync(ctx: Any, seconds: float = 14.0) -> None:
    """`ticking` in a thread or a child process; it returns early once cancelled."""
    _mark(ctx, "start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.cancelled.is_set():
        time.sleep(0.02)
        _mark(ctx, "tick")
    _mark(ctx, "finish")
