"""Jobs for bench/chaos.py: each records its start and finish in `chaos_events`."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import psycopg

EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS chaos_events (
    job text NOT NULL, slot timestamptz, attempt int NOT NULL, run_id bigint NOT NULL,
    worker text NOT NULL, event text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp()
)"""
INSERT = (
    "INSERT INTO chaos_events (job, slot, attempt, run_id, worker, event) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)


def _row(ctx: Any, event: str) -> tuple[Any, ...]:
    return (ctx.job_name, ctx.scheduled_for, ctx.attempt, ctx.run_id, ctx.worker_id, event)


async def work_async(ctx: Any, seconds: float = 0.3) -> None:
    async with await psycopg.AsyncConnection.connect(os.environ["CHAOS_DB"], autocommit=True) as c:
        await c.execute(INSERT, _row(ctx, "start"))
        await asyncio.sleep(seconds)
        await c.execute(INSERT, _row(ctx, "finish"))


def work_sync(ctx: Any, seconds: float = 0.3) -> None:
    with psycopg.connect(os.environ["CHAOS_DB"], autocommit=True) as c:
        c.execute(INSERT, _row(ctx, "start"))
        time.sleep(seconds)
        c.execute(INSERT, _row(ctx, "finish"))
