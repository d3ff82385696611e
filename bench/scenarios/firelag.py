"""firelag: 100 per-second cron jobs on 3 replicas for 60 s.

Start lag p50/p99 (the job function began - scheduled_for), duplicate starts, missed slots.
jobrunner only (the peers' schedulers have no per-second cron to compare with in the same
way). See cron.py.
"""

from __future__ import annotations

from bench.report import Metric, Result
from bench.scenarios import Context
from bench.scenarios.cron import cron_scenario

METRICS = [
    Metric("p50", "start lag p50 (job began)", "ms", "lower", 1),
    Metric("p90", "start lag p90 (job began)", "ms", "lower", 1),
    Metric("p99", "start lag p99 (job began)", "ms", "lower", 1),
    Metric("max", "start lag max (job began)", "ms", "lower", 1),
    Metric("claim_p50", "claimed (started_at) after, p50", "ms", "lower", 1),
    Metric("claim_p99", "claimed (started_at) after, p99", "ms", "lower", 1),
    Metric("record_p50", "slot row written after, p50", "ms", "lower", 1),
    Metric("record_p99", "slot row written after, p99", "ms", "lower", 1),
    Metric("wait_p50", "row to claim, p50", "ms", "lower", 1),
    Metric("wait_p99", "row to claim, p99", "ms", "lower", 1),
    Metric("expected", "slots expected", "", None, 0),
    Metric("duplicates", "duplicate starts", "", "lower", 0),
    Metric("missed", "missed slots", "", "lower", 0),
    Metric("skipped", "slots recorded skipped", "", "lower", 0),
    Metric("rss", "replica RSS, peak", "MiB", "lower", 0),
]


def run(
    ctx: Context,
    jobs: int = 100,
    replicas: int = 3,
    fire_times: int = 60,
    cron: str = "* * * * * *",
    warmup: float = 2.0,
) -> Result:
    return cron_scenario(
        ctx,
        "firelag",
        METRICS,
        jobs=jobs,
        replicas=replicas,
        fire_times=fire_times,
        cron=cron,
        warmup=warmup,
    )
