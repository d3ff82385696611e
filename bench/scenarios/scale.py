"""scale: 10,000 cron jobs due every minute across 4 replicas.

Start lag p99 over every slot of the observed minutes, duplicates, misses, and each replica's
peak RSS (psutil). See cron.py for how the rows are read back.
"""

from __future__ import annotations

from bench.report import Metric, Result
from bench.scenarios import Context
from bench.scenarios.cron import run_cron

METRICS = [
    Metric("p50", "start lag p50", "ms", "lower", 0),
    Metric("p99", "start lag p99", "ms", "lower", 0),
    Metric("max", "start lag max", "ms", "lower", 0),
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
    result = Result(
        "scale",
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
            f"scale r{r}",
            lambda r=r: run_cron(
                ctx.server,
                ctx.dir(f"scale/r{r}"),
                label="scale",
                jobs=jobs,
                replicas=replicas,
                cron=cron,
                fires=fire_times,
                warmup=warmup,
                worker=worker,
                settle=180.0,
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
            f"  scale r{r}: p50 {s['p50'] or 0:.0f} ms, p99 {s['p99'] or 0:.0f} ms, "
            f"{out.rows}/{out.expected} rows, dup {s['duplicates']}, missed {s['missed']}, "
            f"RSS {[round(x) for x in out.rss_mib]} MiB, up after {out.startup_s:.1f}s"
        )
    return result
