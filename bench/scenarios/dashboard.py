"""dashboard: the dashboard's page times with a year of history in `job_runs` (jobrunner).

A fresh database with `jobs` catalogued jobs (half of them per-minute cron jobs) and `rows`
runs (1,000,000 by default) filled in one statement with `generate_series`: spread over a
year, newest last, 97 % succeeded, 2 % failed, 1 % skipped, the cron jobs' rows with their
slots (one per minute back from now, so the timeline of the last hours has rows), plus a
registered worker and 100 runtime schedules. Then each page is fetched `samples` times in
turn through the dashboard app in this process (store calls and rendering; no network) and
its p50/p95 reported: overview, jobs, a cron job's page with its 6-hour timeline, runs (the
newest, a status filter, a job filter, a page deep in the keyset), a run, schedules, workers.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import sqlalchemy as sa

from bench.common import percentile
from bench.report import Metric, Result
from bench.scenarios import Context

PAGES = (
    "overview", "jobs", "job", "runs", "runs_failed", "runs_job", "runs_deep", "run",
    "schedules", "workers",
)  # fmt: skip


def metrics() -> list[Metric]:
    out = []
    for page in PAGES:
        out += [
            Metric(f"{page}_p50", f"{page} p50", "ms", "lower", 1),
            Metric(f"{page}_p95", f"{page} p95", "ms", "lower", 1),
        ]
    return out


def run(ctx: Context, rows: int = 1_000_000, jobs: int = 20, samples: int = 30) -> Result:
    result = Result(
        "dashboard", {"job_runs rows": rows, "jobs": jobs, "samples per page": samples}, metrics()
    )
    for r in range(ctx.repeats):
        times = ctx.guarded(f"dashboard r{r}", lambda: measure(ctx, rows, jobs, samples))
        for page, values in times.items():
            result.add("jobrunner", f"{page}_p50", percentile(values, 50))
            result.add("jobrunner", f"{page}_p95", percentile(values, 95))
            ctx.say(
                f"  r{r} {page}: p50 {percentile(values, 50) or 0:.1f} ms, "
                f"p95 {percentile(values, 95) or 0:.1f} ms"
            )
    return result


FILL = """
INSERT INTO job_runs (job_name, trigger, scheduled_for, run_at, status, reason, attempt,
                      max_attempts, worker_id, kwargs, enqueued_at, started_at, finished_at,
                      error, cancel_requested, priority, schedule_key)
SELECT 'job-' || (i % :jobs),
       CASE WHEN i % :jobs < :cron THEN 'schedule' ELSE 'manual' END,
       CASE WHEN i % :jobs < :cron THEN date_trunc('minute', now())
            - make_interval(mins => (:rows - i) / :jobs) END,
       t, s, CASE WHEN s = 'skipped' THEN 'overlap' END, 1, 1, 'w-bench',
       '{"n": 1}'::json, t, t, t + interval '20 milliseconds',
       CASE WHEN s = 'failed' THEN '{"type": "ValueError", "message": "bad row"}'::json END,
       false, 0, ''
FROM (SELECT i, now() - make_interval(secs => (:rows - i) * 31536000.0 / :rows) AS t,
             CASE WHEN i % 100 < 2 THEN 'failed' WHEN i % 100 = 2 THEN 'skipped'
                  ELSE 'succeeded' END AS s
      FROM generate_series(1, :rows) AS i) g
"""


def fill(url: str, rows: int, jobs: int) -> float:
    """Migrate, catalogue the jobs, fill `rows` runs; seconds the fill took."""
    from jobrunner.records import CatalogEntry, WorkerInfo
    from jobrunner.store.access import WorkerStore

    store = WorkerStore.from_url(url)
    store.prepare_schema()
    cron = jobs // 2
    entries = [
        CatalogEntry(
            name=f"job-{i}",
            cron="* * * * *" if i < cron else None,
            timezone="UTC",
            config_hash=f"h{i}",
            definition={"name": f"job-{i}"},
        )
        for i in range(jobs)
    ]
    store.publish_catalog(entries, "bench")
    hashes = {e.name: e.config_hash for e in entries}
    info = WorkerInfo(
        worker_id="w-bench", hostname="bench", pid=1, version="0", config_hash="c", jobs=hashes
    )
    store.register_worker(info)
    t0 = time.perf_counter()
    with store.engine.begin() as conn:
        conn.execute(sa.text(FILL), {"rows": rows, "jobs": jobs, "cron": cron})
    with store.engine.connect() as conn:
        # A year-old history has long been vacuumed: no autovacuum of the fill in the window.
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            sa.text("VACUUM ANALYZE job_runs")
        )
    store.close()
    return time.perf_counter() - t0


def measure(ctx: Context, rows: int, jobs: int, samples: int) -> dict[str, list[float]]:
    from jobrunner import Client
    from jobrunner.web import create_dashboard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    with ctx.server.fresh("dash") as url:
        took = fill(url, rows, jobs)
        ctx.say(f"  filled {rows:,} rows in {took:.1f} s")
        with Client.from_url(url) as client:
            specs = [{"key": f"u{i}", "cron": "0 9 * * 1", "kwargs": {}} for i in range(100)]
            client.create_schedules(f"job-{jobs - 1}", specs)
            newest = client.list_runs(limit=1)[0].id
            paths = {
                "overview": "/",
                "jobs": "/jobs",
                "job": "/jobs/job-0",
                "runs": "/runs",
                "runs_failed": "/runs?status=failed",
                "runs_job": f"/runs?job=job-{jobs - 1}",
                "runs_deep": f"/runs?before_id={newest // 2}",
                "run": f"/runs/{newest // 3}",
                "schedules": "/schedules",
                "workers": "/workers",
            }
            http = TestClient(create_dashboard(client, dependencies=[]))
            return time_pages(http, paths, samples)


def time_pages(http: Any, paths: dict[str, str], samples: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {page: [] for page in paths}
    for path in paths.values():  # warm: the first fetch pays for connections and caches
        assert http.get(path).status_code == 200, path
    for _ in range(samples):
        for page, path in paths.items():
            t0 = time.perf_counter()
            answer = http.get(path)
            times[page].append((time.perf_counter() - t0) * 1000)
            assert answer.status_code == 200, (path, answer.status_code)
    return times
