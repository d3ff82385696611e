"""firelag: 100 per-second cron jobs on 3 replicas for 60 s.

Start lag p50/p99 (started_at - scheduled_for), duplicate starts, missed slots. jobrunner only
(the peers' schedulers have no per-second cron to compare with in the same way). See cron.py.
"""

from __future__ import annotations

from bench.report import Metric, Result
from bench.scenarios import Context
from bench.scenarios.cron import run_cron

METRICS = [
    Metric("p50", "start lag p50", "ms", "lower", 1),
    Metric("p90", "start lag p90", "ms", "lower", 1),
    Metric("p99", "start lag p99", "ms", "lower", 1),
    Metric("max", "start lag max", "ms", "lower", 1),
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
    result = Result(
        "firelag",
        {
            "jobs": jobs,
            "cron": cron,
            "replicas": replicas,
            "fire times": fire_times,
            "repeats": ctx.repeats,
            "concurrency": ctx.concurrency or "default (16)",
        },
        METRICS,
    )
    worker = {"concurrency": ctx.concurrency} if ctx.concurrency else None
    for r in range(ctx.repeats):
        out = ctx.guarded(
            f"firelag r{r}",
            lambda r=r: run_cron(
                ctx.server,
                ctx.dir(f"firelag/r{r}"),
                label="firelag",
                jobs=jobs,
                replicas=replicas,
                cron=cron,
                fires=fire_times,
                warmup=warmup,
                worker=worker,
            ),
        )
        for key, value in out.summary().items():
            if any(m.key == key for m in METRICS):
                result.add("jobrunner", key, value)
        if out.skipped:
            result.note(f"r{r}: skipped slots by reason {dict(out.skipped)}")
        if out.not_succeeded:
            result.note(f"r{r}: rows neither succeeded nor skipped {dict(out.not_succeeded)}")
        if any(c != 0 for c in out.exit_codes):
            result.note(f"r{r}: replica exit codes after SIGTERM {out.exit_codes}")
        s = out.summary()
        ctx.say(
            f"  firelag r{r}: p50 {s['p50'] or 0:.1f} ms, p99 {s['p99'] or 0:.1f} ms, "
            f"{out.rows}/{out.expected} rows, dup {s['duplicates']}, missed {s['missed']}"
        )
    return result
