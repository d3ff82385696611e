"""scale: 10,000 cron jobs due every minute across 4 replicas.

Start lag p99 over every slot of the observed minutes, duplicates, misses, and each replica's
peak RSS (psutil). See cron.py for how the rows are read back.
"""

from __future__ import annotations

from bench.report import Metric, Result
from bench.scenarios import Context
from bench.scenarios.cron import cron_scenario

METRICS = [
    Metric("p50", "start lag p50 (job began)", "ms", "lower", 0),
    Metric("p99", "start lag p99 (job began)", "ms", "lower", 0),
    Metric("max", "start lag max (job began)", "ms", "lower", 0),
    Metric("claim_p50", "claimed (started_at) after, p50", "ms", "lower", 0),
    Metric("claim_p99", "claimed (started_at) after, p99", "ms", "lower", 0),
    Metric("record_p50", "slot row written after, p50", "ms", "lower", 0),
    Metric("record_p99", "slot row written after, p99", "ms", "lower", 0),
    Metric("wait_p50", "row to claim, p50", "ms", "lower", 0),
    Metric("wait_p99", "row to claim, p99", "ms", "lower", 0),
    Metric("expected", "slots expected", "", None, 0),
    Metric("duplicates", "duplicate starts", "", "lower", 0),
    Metric("missed", "missed slots", "", "lower", 0),
    Metric("skipped", "slots recorded skipped", "", "lower", 0),
    Metric("rss", "replica RSS, peak", "MiB", "lower", 0),
    Metric("startup", "replicas up after", "s", "lower", 1),
]


def run(
    ctx: Context,
    jobs: int = 10_000,
    replicas: int = 4,
    fire_times: int = 2,
    cron: str = "* * * * *",
    warmup: float = 0.0,
) -> Result:
    return cron_scenario(
        ctx,
        "scale",
        METRICS,
        jobs=jobs,
        replicas=replicas,
        fire_times=fire_times,
        cron=cron,
        warmup=warmup,
        settle=180.0,
        # Sized for the workload, as operations.md advises: each replica can start its share
        # of a minute's slots at once (with the default 16, 10,000 slots take ~160 claims).
        concurrency=-(-jobs // replicas),
    )
