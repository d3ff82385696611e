"""procrastinate: an App over a PsycopgConnector with one no-op task.

Worker: `python -m procrastinate --app bench.peers.procrastinate_app.app worker --concurrency 10`
Schema: `python -m procrastinate --app bench.peers.procrastinate_app.app schema --apply`
"""

from __future__ import annotations

import os

import procrastinate

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("BENCH_PEER_DSN", ""))
)


@app.task(name="noop")
async def noop() -> None:
    """Does nothing."""
