"""`python -m bench.enqueue_check --db URL`: the cost of checking an enqueue's kwargs against
the job's published parameters, side by side in one process.

A fresh database with one job whose parameters are published (an int, a str with a default,
an optional list); 2,000 enqueues one per call through `ClientStore.enqueue` (checked, from
the per-client cache) and through the bare enqueue operation (unchecked), alternating order
over 7 rounds; medians and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from jobrunner.records import CatalogEntry
from jobrunner.signature import parameters_of
from jobrunner.store import queue
from jobrunner.store.access import ClientStore, WorkerStore, write_one

RUNS = 2_000
ROUNDS = 7


def typed(ctx: Any, user_id: int, region: str = "eu", tags: list[str] | None = None) -> None:
    """The job's signature (never run)."""


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.enqueue_check")
    p.add_argument("--db", required=True, help="PostgreSQL server URL (maintenance database)")
    server = sa.make_url(p.parse_args().db)
    name = f"bench_enqcheck_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        measure(server.set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def measure(url: str) -> None:
    worker = WorkerStore.from_url(url)
    worker.prepare_schema()
    entry = CatalogEntry(
        name="typed",
        cron=None,
        timezone="UTC",
        config_hash="h",
        definition={"kwargs": {"region": "us"}},
        parameters=parameters_of(typed),
    )
    worker.publish_catalog([entry], "bench")
    client = ClientStore(worker.engine)

    def checked() -> None:
        for i in range(RUNS):
            client.enqueue("typed", {"user_id": i})

    def unchecked() -> None:
        for i in range(RUNS):
            write_one(worker.engine, queue.enqueue("postgresql", "typed", {"user_id": i}))

    rates: dict[str, list[float]] = {"checked": [], "unchecked": []}
    variants: list[tuple[str, Callable[[], None]]] = [
        ("checked", checked),
        ("unchecked", unchecked),
    ]
    for r in range(ROUNDS):
        for label, fn in variants if r % 2 else variants[::-1]:
            began = time.perf_counter()
            fn()
            rates[label].append(RUNS / (time.perf_counter() - began))
    for label, values in rates.items():
        print(
            f"{label}: median {statistics.median(values):,.0f} runs/s {[round(v) for v in values]}"
        )
    ratio = statistics.median(rates["checked"]) / statistics.median(rates["unchecked"])
    print(f"checked / unchecked: {ratio:.3f}")
    worker.close()


if __name__ == "__main__":
    main()
