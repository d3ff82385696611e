"""history: jobrunner's hot statements, `why` and the dashboard with a year of history.

Two fresh databases side by side: `empty` (no history) and `full` (`rows` runs, 10,000,000 by
default, filled with `generate_series` as the dashboard scenario fills its 1,000,000: a year
of 20 jobs' runs, half of them per-minute cron jobs, 97 % succeeded). In each, `samples`
worker cycles as a worker at the default concurrency makes them, timed one by one: an
enqueue (one `Client.enqueue`), a claim of 16 queued runs, the finish of those 16, a
heartbeat; p50 and p95 of each, the full database's as a ratio of the empty one's.
In `full` also:
- `why` of a cron job over its last hour (the CLI command in this process, its store
  connection included) and the dashboard's pages, p50/p95;
- pruning: the oldest `prune` runs (1,000,000) deleted by the pruner's own call
  (`prune` with a retention that leaves the rest), while the worker cycles above go on in
  this thread: how long it took, and each claim's time during it (max and p99), against the
  target that no claim is delayed by more than 50 ms.
"""

from __future__ import annotations

import threading
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import percentile
from bench.report import Metric, Result
from bench.scenarios import Context, dashboard

JOB = "job-19"  # a trigger-only job of the fill (`dashboard.fill`: jobs 10-19 have no cron)
OPS = ("enqueue", "claim", "finish", "heartbeat")
BATCH = 16  # the default concurrency: runs per claim
PAGES = ("overview", "jobs", "job", "runs", "runs_failed", "runs_job", "runs_deep", "run",
         "workers")  # fmt: skip


def metrics() -> list[Metric]:
    out = []
    for op in OPS:
        out += [
            Metric(f"{op}_p50", f"{op} p50", "ms", "lower", 2),
            Metric(f"{op}_p95", f"{op} p95", "ms", "lower", 2),
        ]
    out += [
        Metric("why_p50", "why (last hour of a cron job) p50", "ms", "lower", 1),
        Metric("why_p95", "why (last hour of a cron job) p95", "ms", "lower", 1),
        Metric("claim_max", "claim max (no prune)", "ms", "lower", 1),
        *(Metric(f"{p}_p95", f"dashboard {p} p95", "ms", "lower", 1) for p in PAGES),
        Metric("prune_s", "prune of the oldest rows", "s", "lower", 1),
        Metric("prune_claim_p99", "claim p99 during the prune", "ms", "lower", 1),
        Metric("prune_claim_max", "claim max during the prune", "ms", "lower", 1),
    ]
    return out


def run(ctx: Context, rows: int = 10_000_000, samples: int = 300, prune: int = 1_000_000) -> Result:
    params = {"job_runs rows": rows, "samples": samples, "pruned": prune, "repeats": ctx.repeats}
    result = Result("history", params, metrics(), ratio_to="empty")
    for r in range(ctx.repeats):
        order = (("empty", 0), ("full", rows))
        for variant, n in order if r % 2 == 0 else order[::-1]:
            ctx.guarded(
                f"history {variant} r{r}",
                lambda v=variant, n=n, r=r: measure(ctx, result, v, n, samples, prune, r),
            )
    return result


def measure(
    ctx: Context, result: Result, variant: str, rows: int, samples: int, prune: int, r: int
) -> None:
    with ctx.server.fresh("hist") as url:
        took = dashboard.fill(url, rows, 20)
        ctx.say(f"  history {variant} r{r}: filled {rows:,} rows in {took:.1f} s")
        times = cycles(url, samples)
        for op, values in times.items():
            result.add(variant, f"{op}_p50", percentile(values, 50))
            result.add(variant, f"{op}_p95", percentile(values, 95))
        result.add(variant, "claim_max", max(times["claim"]))
        ctx.say("  " + ", ".join(
            f"{op} p50 {percentile(v, 50) or 0:.2f} / p95 {percentile(v, 95) or 0:.2f} ms"
            for op, v in times.items()
        ))  # fmt: skip
        if not rows:
            return
        why = why_times(ctx, url, samples=20)
        result.add(variant, "why_p50", percentile(why, 50))
        result.add(variant, "why_p95", percentile(why, 95))
        ctx.say(f"  why p50 {percentile(why, 50) or 0:.1f} / p95 {percentile(why, 95) or 0:.1f} ms")
        for page, values in pages(url).items():
            result.add(variant, f"{page}_p95", percentile(values, 95))
            ctx.say(f"  dashboard {page}: p95 {percentile(values, 95) or 0:.1f} ms")
        pruned = pruning(url, rows, prune)
        result.add(variant, "prune_s", pruned["seconds"])
        result.add(variant, "prune_claim_p99", percentile(pruned["claims"], 99))
        result.add(variant, "prune_claim_max", max(pruned["claims"], default=None))
        result.extra.setdefault("prune", []).append(
            {k: v for k, v in pruned.items() if k != "claims"}
        )
        claims = pruned["claims"]
        ctx.say(
            f"  pruned {pruned['deleted']:,} rows in {pruned['seconds']:.1f} s; {len(claims)} "
            f"claims meanwhile, p99 {percentile(claims, 99) or 0:.1f} ms, "
            f"max {max(claims, default=0):.1f} ms"
        )


class Cycler:
    """A worker's statements at the default concurrency, one cycle at a time, timed."""

    def __init__(self, url: str) -> None:
        from jobrunner import Client
        from jobrunner.records import Policy, WorkerInfo
        from jobrunner.store.access import WorkerStore

        self.store = WorkerStore.from_url(url)
        self.client = Client.from_url(url)
        self.worker = "w-history"
        info = WorkerInfo(worker_id=self.worker, hostname="bench", pid=2, version="0",
                          config_hash="c", jobs={JOB: "h19"})  # fmt: skip
        self.store.register_worker(info)
        self.policies = {JOB: Policy(overlap="allow")}

    def cycle(self, times: dict[str, list[float]]) -> None:
        from jobrunner.records import Outcome

        t0 = time.perf_counter()
        self.client.enqueue(JOB)
        t1 = time.perf_counter()
        self.client.enqueue_many(JOB, [None] * (BATCH - 1))
        t2 = time.perf_counter()
        claim = self.store.claim(worker_id=self.worker, limit=BATCH, policies=self.policies,
                                 lease_ttl=30)  # fmt: skip
        t3 = time.perf_counter()
        self.store.finish(
            self.worker, [Outcome(lease=c.lease, status="succeeded") for c in claim.started]
        )
        t4 = time.perf_counter()
        self.store.heartbeat(self.worker, 30, housekeeping=False)
        t5 = time.perf_counter()
        assert len(claim.started) == BATCH, len(claim.started)
        for op, ms in zip(OPS, ((t1 - t0), (t3 - t2), (t4 - t3), (t5 - t4)), strict=True):
            times[op].append(ms * 1000)

    def close(self) -> None:
        self.client.close()
        self.store.close()


def cycles(url: str, samples: int) -> dict[str, list[float]]:
    cycler = Cycler(url)
    try:
        for _ in range(20):  # warm: connections, statement caches
            cycler.cycle({op: [] for op in OPS})
        times: dict[str, list[float]] = {op: [] for op in OPS}
        for _ in range(samples):
            cycler.cycle(times)
        return times
    finally:
        cycler.close()


def pages(url: str, samples: int = 20) -> dict[str, list[float]]:
    """The dashboard's pages (`dashboard` scenario's set), milliseconds each."""
    from jobrunner import Client
    from jobrunner.web import create_dashboard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    with Client.from_url(url) as client:
        newest = client.list_runs(limit=1)[0].id
        paths = {
            "overview": "/",
            "jobs": "/jobs",
            "job": "/jobs/job-0",
            "runs": "/runs",
            "runs_failed": "/runs?status=failed",
            "runs_job": "/runs?job=job-19",
            "runs_deep": f"/runs?before_id={newest // 2}",
            "run": f"/runs/{newest // 3}",
            "workers": "/workers",
        }
        http = TestClient(create_dashboard(client, dependencies=[]))
        return dashboard.time_pages(http, paths, samples)


def why_times(ctx: Context, url: str, samples: int) -> list[float]:
    """`jobrunner why job-0` (the last hour) run in this process, milliseconds each."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from typer.testing import CliRunner

    from jobrunner.cli import app

    config = Path(ctx.dir("history")) / "why.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')
    runner, times = CliRunner(), []
    for i in range(samples + 2):
        t0 = time.perf_counter()
        got = runner.invoke(app, ["why", "job-0", "--json", "-c", str(config)])
        if i >= 2:  # the first two warm the imports
            times.append((time.perf_counter() - t0) * 1000)
        assert got.exit_code == 0, got.output
    return times


def pruning(url: str, rows: int, prune: int) -> dict[str, Any]:
    """Delete the oldest `prune` of `rows` (a year, evenly) as the pruner does, while claims
    go on in this thread; how long it took and each claim's time meanwhile."""
    from jobrunner.store.access import WorkerStore

    retention = timedelta(days=365 * (1 - prune / rows))
    store = WorkerStore.from_url(url)
    out: dict[str, Any] = {}

    def prune_now() -> None:
        t0 = time.perf_counter()
        out["deleted"] = store.prune(older_than=retention)
        out["seconds"] = time.perf_counter() - t0

    cycler = Cycler(url)
    times: dict[str, list[float]] = {op: [] for op in OPS}
    try:
        thread = threading.Thread(target=prune_now)
        thread.start()
        while thread.is_alive():
            cycler.cycle(times)
        thread.join()
    finally:
        cycler.close()
        store.close()
    return {**out, "claims": times["claim"], "cycles": len(times["claim"])}
