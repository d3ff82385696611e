"""Jobs for bench/chaos.py: each appends its start and finish to the file `$CHAOS_EVENTS`
(one JSON line per event, written with O_APPEND), so that the record survives restarts of
the database the jobs' replicas use."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any


def record(ctx: Any, event: str, key: str | None = None) -> None:
    line = json.dumps(
        {
            "job": ctx.job_name,
            "key": key,
            "slot": ctx.scheduled_for.isoformat() if ctx.scheduled_for else None,
            "attempt": ctx.attempt,
            "run_id": ctx.run_id,
            "worker": ctx.worker_id,
            "event": event,
            "t": time.time(),
        }
    )
    fd = os.open(os.environ["CHAOS_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def work_async(ctx: Any, seconds: float = 0.3, key: str | None = None) -> None:
    """`key`: a runtime schedule's, given as its kwargs."""
    record(ctx, "start", key)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        record(ctx, "cancelled", key)
        raise
    record(ctx, "finish", key)


def work_sync(ctx: Any, seconds: float = 0.3) -> None:
    record(ctx, "start")
    time.sleep(seconds)
    record(ctx, "finish")


async def fail_async(ctx: Any, seconds: float = 0.1) -> None:
    """Fails every attempt (a source of `failed`, `exhausted` and, when its replica dies,
    `lost` notification events)."""
    await asyncio.sleep(seconds)
    raise RuntimeError(f"chaos failure of attempt {ctx.attempt}")
