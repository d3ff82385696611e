"""Async example jobs: they run as tasks on the worker's event loop."""

from __future__ import annotations

import asyncio
import logging

from jobrunner import JobContext

logger = logging.getLogger(__name__)


async def nightly(region: str = "eu", ctx: JobContext | None = None) -> None:
    """Pretend to build a report; the log line carries the run's context."""
    await asyncio.sleep(0.1)
    if ctx is not None:
        ctx.log.info("report built", region=region, attempt=ctx.attempt, fence=ctx.fence)


async def tick() -> None:
    """A tiny job that fires every 10 seconds so a new worker visibly does something."""
    logger.info("tick")
