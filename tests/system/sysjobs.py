"""Job functions for system tests. Each start is appended to $JR_STARTS (one line, O_APPEND)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

logger = logging.getLogger("sysjobs")


def _record(ctx: Any, event: str = "start") -> None:
    path = os.environ.get("JR_STARTS")
    if not path:
        return
    line = json.dumps(
        {
            "event": event,
            "job": ctx.job_name,
            "run_id": ctx.run_id,
            "slot": ctx.scheduled_for.isoformat() if ctx.scheduled_for else None,
            "attempt": ctx.attempt,
            "worker": ctx.worker_id,
            "fence": ctx.fence,
            "t": time.time(),
        }
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def noop_async(ctx: Any) -> None:
    _record(ctx)
    _record(ctx, "finish")


def noop_sync(ctx: Any) -> None:
    _record(ctx)
    logger.info("sync job says hello")
    _record(ctx, "finish")


async def sleep_async(ctx: Any, seconds: float = 1.0) -> None:
    _record(ctx)
    await asyncio.sleep(seconds)
    _record(ctx, "finish")


def sleep_sync(ctx: Any, seconds: float = 1.0) -> None:
    _record(ctx)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.cancelled.is_set():
        time.sleep(0.02)
    _record(ctx, "finish")


def fail(ctx: Any, message: str = "boom") -> None:
    _record(ctx)
    raise RuntimeError(message)


async def slow_fail(ctx: Any, seconds: float = 1.0) -> None:
    _record(ctx)
    await asyncio.sleep(seconds)
    raise RuntimeError(f"failed after {seconds} s")


def fail_until(ctx: Any, attempt: int = 2) -> None:
    """Fails until the given attempt, then succeeds."""
    _record(ctx)
    if ctx.attempt < attempt:
        raise ValueError(f"attempt {ctx.attempt} fails")
    _record(ctx, "finish")


def starts(path: str) -> list[dict[str, Any]]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


async def tenant_sleep(ctx: Any, tenant: str, seconds: float = 0.3) -> None:
    """A job whose runs are grouped by tenant (concurrency_key = "tenant")."""
    _record(ctx)
    await asyncio.sleep(seconds)
    _record(ctx, "finish")


async def tenant_noop(ctx: Any, tenant: str) -> None:
    _record(ctx)
    _record(ctx, "finish")


def returns(ctx: Any, value: Any = None) -> Any:
    """Returns what it is given (a plain def: it may run in a child process)."""
    return value


async def returns_async(ctx: Any, value: Any = None) -> Any:
    return value


def returns_object(ctx: Any) -> Any:
    return object()  # not JSON: the run succeeds, its result is not kept


def returns_big(ctx: Any, size: int = 100_000) -> str:
    return "x" * size


def typed(ctx: Any, user_id: int, region: str = "eu", tags: list[str] | None = None) -> int:
    """A job with typed parameters: enqueues are checked against them in the client."""
    return user_id


async def flip(ctx: Any) -> None:
    """Fails for every slot whose second is a multiple of 4 (a timeline with two colours)."""
    _record(ctx)
    if ctx.scheduled_for is not None and ctx.scheduled_for.second % 4 == 0:
        raise RuntimeError("every fourth second fails")


def traced(ctx: Any) -> None:
    """A sync job that starts a span of its own (OpenTelemetry API) and logs a line in it."""
    from opentelemetry import trace

    with trace.get_tracer("sysjobs").start_as_current_span("inner work"):
        logger.info("traced job works")


def otel_modules(ctx: Any) -> list[str]:
    """The OpenTelemetry modules the worker has imported (as the run's result)."""
    import sys

    return sorted(m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m])
