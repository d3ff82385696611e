"""pickup: enqueue one run at a time into an idle worker; enqueue-to-start latency.

One worker per system (jobrunner's default config; procrastinate concurrency 10; pgqueuer
batch 10), warmed up by one run. Then `size` runs are enqueued one by one, 50-100 ms apart (the
worker is idle again before each). Latency = start - enqueue, both the database's `now()` of
the transactions that wrote them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from bench.common import percentile, stop_all, wait_for
from bench.report import Metric, Result
from bench.scenarios import Context
from bench.systems import SYSTEMS, System

METRICS = [
    Metric("p50", "enqueue-to-start p50", "ms", "lower", 2),
    Metric("p90", "enqueue-to-start p90", "ms", "lower", 2),
    Metric("p99", "enqueue-to-start p99", "ms", "lower", 2),
    Metric("max", "enqueue-to-start max", "ms", "lower", 2),
]


def run(ctx: Context, size: int = 200, gap: tuple[float, float] = (0.05, 0.1)) -> Result:
    result = Result(
        "pickup",
        {
            "runs": size,
            "gap_ms": f"{gap[0] * 1000:.0f}-{gap[1] * 1000:.0f}",
            "repeats": ctx.repeats,
        },
        METRICS,
    )
    rng = random.Random(7)
    for r in range(ctx.repeats):
        for name in ctx.systems:
            done, lat = ctx.guarded(
                f"pickup {name} r{r}", lambda n=name, r=r: measure(ctx, n, r, size, gap, rng)
            )
            if not done or len(lat) != size:
                result.note(f"{name} r{r}: {len(lat)} of {size} runs started")
            for key, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
                result.add(name, key, percentile(lat, q))
            ctx.say(
                f"  pickup {name} r{r}: p50 {percentile(lat, 50) or 0:.2f} ms, "
                f"p99 {percentile(lat, 99) or 0:.2f} ms"
            )
    return result


def measure(
    ctx: Context, name: str, r: int, size: int, gap: tuple[float, float], rng: random.Random
) -> tuple[bool, list[float]]:
    workdir = ctx.dir(f"pickup/{name}-r{r}")
    with ctx.server.fresh(f"pu_{name}") as url:
        system = SYSTEMS[name](
            url, workdir, concurrency=ctx.concurrency if name == "jobrunner" else None
        )
        system.setup()
        try:
            system.start_worker()
            system.wait_ready()
            time.sleep(0.5)
            for _ in range(size):
                system.enqueue_each(1)
                time.sleep(rng.uniform(*gap))
            done = wait_for(_drained(system), 30, 0.05)
            lat = [x * 1000 for x in system.latencies()[1:]]  # without the warm-up
        finally:
            stop_all(system.procs)
            system.close()
    return done, lat


def _drained(system: System) -> Callable[[], bool]:
    return lambda: system.unfinished() == 0
