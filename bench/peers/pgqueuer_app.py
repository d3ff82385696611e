"""pgqueuer: a PgQueuer over its asyncpg driver (the driver its docs recommend for throughput)
with one no-op entrypoint.

Worker: `python -m pgqueuer run bench.peers.pgqueuer_app:create --batch-size 10`
Schema: `python -m pgqueuer --pg-dsn DSN install`
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgqueuer import AsyncpgDriver, PgQueuer
from pgqueuer.models import Job


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    conn = await asyncpg.connect(dsn=os.environ["BENCH_PEER_DSN"])
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        """Does nothing."""

    try:
        yield pgq
    finally:
        await conn.close()
