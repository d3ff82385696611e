"""The benchmark harness (bench/) in tiny sizes, so that it cannot rot.

Each jobrunner scenario runs for seconds against real `jobrunner run` processes. Only the
structure is asserted (every number is there, no slot started twice), never a timing: the
figures themselves are in docs/benchmarks.md and come from `python -m bench`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.common import Server, kill_all
from bench.report import Result
from bench.scenarios import (
    Context,
    dashboard,
    failover,
    firelag,
    idle,
    memory,
    pickup,
    queues,
    results,
    scale,
    schedules,
    throughput,
)

pytestmark = [pytest.mark.postgres, pytest.mark.system, pytest.mark.timeout(90)]


@pytest.fixture
def ctx(pg_server_url: str, tmp_path: Path) -> Iterator[Context]:
    server = Server(pg_server_url)
    context = Context(server=server, workdir=tmp_path, repeats=1, systems=("jobrunner",))
    try:
        yield context
    finally:
        kill_all()
        server.drop_all()
        assert not server.created


def values(result: Result, system: str = "jobrunner") -> dict[str, float | None]:
    return {m.key: result.median(system, m.key) for m in result.metrics}


def test_throughput(ctx: Context) -> None:
    result = throughput.run(ctx, size=60, workers=(1,))
    v = values(result)
    for key in ("enqueue_each", "enqueue_bulk", "db_rate_1", "wall_rate_1"):
        assert v[key] is not None and v[key] > 0, key
    assert len(result.repeats("jobrunner", "db_rate_1")) == 2  # each-filled and bulk-filled
    assert not result.notes, result.notes  # every run succeeded, workers exited 0
    assert "| drain with 1 worker(s), database time (runs/s) |" in result.table()


def test_pickup(ctx: Context) -> None:
    result = pickup.run(ctx, size=5, gap=(0.02, 0.04))
    v = values(result)
    assert all(v[k] is not None and v[k] >= 0 for k in ("p50", "p90", "p99", "max"))
    assert not result.notes, result.notes


def test_firelag(ctx: Context) -> None:
    result = firelag.run(ctx, jobs=4, replicas=2, fire_times=2, warmup=1.0)
    v = values(result)
    assert v["expected"] == 8
    assert v["duplicates"] == 0
    assert v["missed"] is not None and v["p50"] is not None and v["p99"] is not None
    assert v["rss"] is not None and v["rss"] > 0


def test_scale(ctx: Context) -> None:
    result = scale.run(ctx, jobs=20, replicas=2, fire_times=2, cron="* * * * * *", warmup=1.0)
    v = values(result)
    assert v["expected"] == 40
    assert v["duplicates"] == 0
    assert v["missed"] is not None and v["p99"] is not None and v["rss"] is not None


def test_failover(ctx: Context) -> None:
    # The peer's start is awaited at most 5 s: a slow takeover leaves None (and a note), which
    # is a finding for docs/benchmarks.md, not a failure of the harness.
    result = failover.run(
        ctx, replicas=2, lease_ttl="2s", heartbeat="0.5s", shutdown_grace="0.2s", max_wait=5.0
    )
    for key in ("kill", "kill_over_ttl", "term", "term_handover", "term_exit"):
        assert len(result.repeats("jobrunner", key)) == 1, key
    assert values(result)["term_exit"] == 0  # SIGTERM drains and exits 0


def test_idle(ctx: Context) -> None:
    result = idle.run(ctx, counts=(1,), window=2.0, settle=0.5)
    v = values(result)
    assert v["stmt_1"] is not None and v["stmt_1"] >= 0
    assert v["xact_1"] is not None and v["rss_1"] is not None
    assert result.extra["statements_per_replica_minute"]


def test_memory(ctx: Context) -> None:
    result = memory.run(ctx, duration=1.0)
    v = values(result)
    assert v["rss_peak"] is not None and v["rss_peak"] > 0


def test_queues(ctx: Context) -> None:
    result = queues.run(
        ctx, size=60, backlog=10_000, urgent=3, tenants=4, concurrencies=(16,), gap=(0.01, 0.02)
    )
    for key in ("urgent_p50", "urgent_p99", "urgent_max"):
        assert values(result, "plain")[key] is not None, key
    for variant in queues.VARIANTS:
        v = values(result, variant)
        assert v["rate_16"] is not None and v["rate_16"] > 0, variant
        assert v["cpu_16"] is not None, variant
    # every run succeeded, workers exited 0 (notes of timing aside: whether the rate limit
    # bound, whether the backlog ran low)
    timing = ("did not bind", "backlog")
    assert [n for n in result.notes if not any(t in n for t in timing)] == [], result.notes
    assert "| keyed/plain |" in result.table()


def test_results(ctx: Context) -> None:
    result = results.run(ctx, size=40, tenants=3, concurrencies=(16,))
    for variant in results.VARIANTS:
        assert values(result, variant)["rate_16"] is not None, variant
    assert result.notes == [] and "| kb/none |" in result.table()
    assert set(result.extra["paired_ratios"]["c16"][0]) == {"small", "kb"}


def test_dashboard(ctx: Context) -> None:
    result = dashboard.run(ctx, rows=2_000, jobs=4, samples=2)
    for page in dashboard.PAGES:
        assert values(result)[f"{page}_p95"] is not None, page


def test_schedules(ctx: Context) -> None:
    result = schedules.run(ctx, count=30, replicas=2, minutes=2, window=2.0, period=1)
    v = values(result)
    assert v["bulk"] is not None and v["each"] is not None
    assert v["idle_none"] is not None and v["idle_many"] is not None
    assert (v["expected"], v["duplicates"], v["missed"]) == (60, 0, 0), result.extra["fire"]
    assert v["lag_p99"] is not None and v["plan_p99"] is not None


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("procrastinate", "pgqueuer", "asyncpg")),
    reason="the peers are not installed (pip install -e '.[bench]')",
)
def test_peers_throughput_and_pickup(ctx: Context) -> None:
    ctx.systems = ("jobrunner", "procrastinate", "pgqueuer")
    result = throughput.run(ctx, size=30, workers=(1,))
    for system in ctx.systems:
        assert values(result, system)["db_rate_1"] is not None, system
    assert "jobrunner/pgqueuer" in result.table()
    result = pickup.run(ctx, size=3, gap=(0.02, 0.04))
    for system in ctx.systems:
        assert values(result, system)["p50"] is not None, system
