"""schedules: runtime schedules at scale (jobrunner).

- create: `count` schedules of a no-op job through `Client.create_schedules` (batches of
  10,000, one statement each on PostgreSQL), and 1,000 through `Client.create_schedule`
  (one call each); schedules/s.
- idle: one replica whose database holds `count` schedules none of which is due soon
  (yearly), against one replica with none, side by side: statements/s each sends (through
  the counting proxy of `idle`) and the difference, the planner's cost.
- fire: `count` per-minute schedules (`* * * * *`) and `replicas` workers at the default
  concurrency; over `minutes` fire minutes, every expected slot (schedules x minutes) is
  counted: started once, started twice (duplicates), never started (missed); start lag
  (started_at - slot, database time) p50/p99/max, and when the planner recorded the slots
  (enqueued_at - slot: negative is ahead of time) p50/p99, which says whether planning or
  running is where the time went.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import percentile, query, scalar, stop_all, wait_for, wait_jobrunner_started
from bench.report import Metric, Result
from bench.scenarios import Context, idle
from bench.systems import Jobrunner

JOB = {"name": "tick", "func": "bench.jobs:noop", "misfire_grace": "30m"}
BATCH = 10_000
ONE_BY_ONE = 1_000


def metrics() -> list[Metric]:
    return [
        Metric("bulk", "create, bulk (create_schedules)", "schedules/s", "higher", 0),
        Metric("each", "create, one per call (create_schedule)", "schedules/s", "higher", 0),
        Metric("idle_none", "idle replica, no schedules: statements/s", "", "lower", 2),
        Metric("idle_many", "idle replica, the schedules not due: statements/s", "", "lower", 2),
        Metric("expected", "fire: slots expected", "", None, 0),
        Metric("duplicates", "fire: slots started more than once", "", "lower", 0),
        Metric("missed", "fire: slots never started", "", "lower", 0),
        Metric("lag_p50", "fire: start lag p50", "ms", "lower", 0),
        Metric("lag_p99", "fire: start lag p99", "ms", "lower", 0),
        Metric("lag_max", "fire: start lag max", "ms", "lower", 0),
        Metric("plan_p50", "fire: slot recorded, relative to its time, p50", "ms", "lower", 0),
        Metric("plan_p99", "fire: slot recorded, relative to its time, p99", "ms", "lower", 0),
    ]


CRONS = {60: "* * * * *", 1: "* * * * * *"}  # period (s) -> cron


def run(
    ctx: Context,
    count: int = 100_000,
    replicas: int = 4,
    minutes: int = 2,
    window: float = 30.0,
    period: int = 60,
) -> Result:
    """`minutes` fire times `period` seconds apart (60: per-minute schedules; 1, for a
    smoke test: per-second)."""
    params = {"schedules": count, "replicas": replicas, "fire times": minutes, "period": period}
    result = Result("schedules", {**params, "idle window_s": window}, metrics())
    for r in range(ctx.repeats):
        repeat(ctx, result, r, (count, replicas, minutes, period), window)
    return result


def repeat(
    ctx: Context, result: Result, r: int, shape: tuple[int, int, int, int], window: float
) -> None:
    count = shape[0]
    bulk, each = ctx.guarded(f"schedules create r{r}", lambda: measure_create(ctx, r, count))
    result.add("jobrunner", "bulk", bulk)
    result.add("jobrunner", "each", each)
    ctx.say(f"  create r{r}: bulk {bulk:,.0f}/s, one per call {each:,.0f}/s")
    for label, n in (("idle_none", 0), ("idle_many", count)):
        rate, top = ctx.guarded(f"schedules {label} r{r}", lambda n=n: idle_rate(ctx, r, n, window))
        result.add("jobrunner", label, rate)
        result.extra.setdefault("idle_statements_per_minute", {})[f"{label}-r{r}"] = top
        ctx.say(f"  {label} r{r}: {rate:.2f} statements/s")
    fired = ctx.guarded(f"schedules fire r{r}", lambda: fire(ctx, r, shape))
    keys = {m.key for m in result.metrics}
    for key, value in fired.items():
        if key in keys:
            result.add("jobrunner", key, value)
    result.extra.setdefault("fire", []).append(fired)
    ctx.say(
        f"  fire r{r}: {fired['expected']:,} slots, {fired['duplicates']} duplicates, "
        f"{fired['missed']} missed; lag p50 {fired['lag_p50']:.0f} ms, p99 "
        f"{fired['lag_p99']:.0f} ms; recorded p99 {fired['plan_p99']:+.0f} ms"
    )


def _system(ctx: Context, url: str, where: str) -> Jobrunner:
    system = Jobrunner(url, ctx.dir(where), jobs=[JOB])
    system.setup()
    return system


def _specs(count: int, cron: str, start: int = 0) -> list[dict[str, Any]]:
    return [{"key": f"s{i}", "cron": cron, "kwargs": {}} for i in range(start, start + count)]


def bulk_create(client: Any, count: int, cron: str) -> float:
    """Create `count` schedules in batches; the seconds it took."""
    t0 = time.perf_counter()
    for start in range(0, count, BATCH):
        client.create_schedules("tick", _specs(min(BATCH, count - start), cron, start))
    return time.perf_counter() - t0


def measure_create(ctx: Context, r: int, count: int) -> tuple[float, float]:
    from jobrunner import Client

    with ctx.server.fresh("sch_create") as url:
        system = _system(ctx, url, f"schedules/create-r{r}")
        try:
            with Client.from_url(url) as client:
                bulk = count / bulk_create(client, count, "0 0 1 1 *")
                t0 = time.perf_counter()
                for spec in _specs(ONE_BY_ONE, "0 0 1 1 *", count):
                    client.create_schedule("tick", spec["cron"], key=spec["key"])
                each = ONE_BY_ONE / (time.perf_counter() - t0)
        finally:
            system.close()
    return bulk, each


def idle_rate(ctx: Context, r: int, count: int, window: float) -> tuple[float, dict[str, float]]:
    """Statements/s of one replica whose database holds `count` yearly schedules."""
    from jobrunner import Client

    def create(url: str) -> None:
        with Client.from_url(url) as client:
            bulk_create(client, count, "0 0 1 1 *")

    after, before, _, _, elapsed, _, _ = idle.measure(
        ctx, r, 1, window, 5.0, jobs=[JOB], after_start=create if count else None
    )
    delta = after[0] - before[0]
    top = {k: round(v / elapsed * 60, 1) for k, v in delta.most_common(8)}
    return sum(delta.values()) / elapsed, top


def fire(ctx: Context, r: int, shape: tuple[int, int, int, int]) -> dict[str, Any]:
    from jobrunner import Client

    count, replicas, times, period = shape
    step = timedelta(seconds=period)
    with ctx.server.fresh("sch_fire") as url:
        system = _system(ctx, url, f"schedules/fire-r{r}")
        try:
            procs = [system.start_worker() for _ in range(replicas)]
            wait_jobrunner_started(procs, timeout=300)
            with Client.from_url(url) as client:
                bulk_create(client, count, CRONS[period])
            created = datetime.now(UTC).timestamp()
            first = datetime.fromtimestamp((created // period + 1) * period, UTC)
            slots = [first + i * step for i in range(times)]
            last = slots[-1]
            time.sleep(max((last - datetime.now(UTC)).total_seconds(), 0) + 1)

            def done() -> bool:
                return _started(url, last) >= count or datetime.now(UTC) > last + timedelta(
                    minutes=5
                )

            wait_for(done, 400, 1.0)
            codes = stop_all(procs)
            found = _count(url, slots, count)
        finally:
            stop_all(system.procs)
            system.close()
    found["exit_codes"] = codes
    return found


def _started(url: str, slot: datetime) -> int:
    return int(
        scalar(
            url,
            "SELECT count(*) FROM job_runs WHERE schedule_key <> '' AND scheduled_for = %s "
            "AND started_at IS NOT NULL",
            (slot,),
        )
    )


def _count(url: str, slots: list[datetime], count: int) -> dict[str, Any]:
    rows = query(
        url,
        """SELECT schedule_key, scheduled_for, count(*) FILTER (WHERE started_at IS NOT NULL),
                  min(extract(epoch FROM started_at - scheduled_for)),
                  min(extract(epoch FROM enqueued_at - scheduled_for))
           FROM job_runs WHERE schedule_key <> '' AND attempt = 1 AND scheduled_for = ANY(%s)
           GROUP BY 1, 2""",
        (slots,),
    )
    starts = [int(row[2]) for row in rows]
    lags = sorted(float(row[3]) * 1000 for row in rows if row[3] is not None)
    planned = sorted(float(row[4]) * 1000 for row in rows if row[4] is not None)
    expected = count * len(slots)
    return {
        "expected": expected,
        "duplicates": sum(n - 1 for n in starts if n > 1),
        "missed": expected - sum(1 for n in starts if n >= 1),
        "lag_p50": percentile(lags, 50) or 0.0,
        "lag_p99": percentile(lags, 99) or 0.0,
        "lag_max": percentile(lags, 100) or 0.0,
        "plan_p50": percentile(planned, 50) or 0.0,
        "plan_p99": percentile(planned, 99) or 0.0,
    }
