"""Shared by firelag and scale: many cron jobs on several replicas, read back slot by slot.

The replicas start; once all are up, the next `fire_times` fire times (after `warmup`
seconds) are observed. Then the harness waits until every row of those slots is final, stops
the replicas (SIGTERM) and reads `job_runs`:
- lag = when the job function began (the host's clock, written by the job) - scheduled_for;
  the harness, the database and the replicas share one host, so one clock. `started_at`, the
  database's time when the claim's transaction began, can be far earlier with large claims:
  "claimed" = started_at - scheduled_for is reported beside it;
- duplicate rows: more than one row per (job, scheduled_for, attempt);
- duplicate starts: a slot whose job function ran more than once (each start appends a line to
  a file, so this does not rely on the unique key);
- missed: an expected (job, slot) without any row; skipped: rows recorded `skipped`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from croniter import croniter

from bench.common import (
    Server,
    percentile,
    query,
    rss_bytes,
    scalar,
    start_jobrunner,
    stop_all,
    wait_for,
    wait_jobrunner_started,
    write_jobrunner_config,
)
from bench.report import Metric, Result
from bench.scenarios import Context


@dataclass
class CronOutcome:
    expected: int
    rows: int
    lags_ms: list[float]  # the job function began - scheduled_for
    claim_ms: list[float]  # started_at - scheduled_for: the claim's transaction began
    record_ms: list[float]  # enqueued_at - scheduled_for: until the slot's row was written
    wait_ms: list[float]  # started_at - enqueued_at: from the row to the claim
    duplicate_rows: int
    duplicate_starts: int
    missed: int
    skipped: Counter[str]
    not_succeeded: Counter[str]
    rss_mib: list[float] = field(default_factory=list)  # the peak of each replica
    exit_codes: list[int] = field(default_factory=list)
    first_slot: datetime | None = None
    last_slot: datetime | None = None
    startup_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "p50": percentile(self.lags_ms, 50),
            "p90": percentile(self.lags_ms, 90),
            "p99": percentile(self.lags_ms, 99),
            "max": percentile(self.lags_ms, 100),
            "claim_p50": percentile(self.claim_ms, 50),
            "claim_p99": percentile(self.claim_ms, 99),
            "record_p50": percentile(self.record_ms, 50),
            "record_p99": percentile(self.record_ms, 99),
            "wait_p50": percentile(self.wait_ms, 50),
            "wait_p99": percentile(self.wait_ms, 99),
            "expected": self.expected,
            "duplicates": self.duplicate_rows + self.duplicate_starts,
            "missed": self.missed,
            "skipped": sum(self.skipped.values()),
            "rss": max(self.rss_mib) if self.rss_mib else None,
            "startup": self.startup_s,
        }


def fire_times(cron: str, after: datetime, count: int) -> list[datetime]:
    it = croniter(cron, after)
    return [it.get_next(datetime).astimezone(UTC) for _ in range(count)]


def run_cron(
    server: Server,
    workdir: Path,
    *,
    label: str,
    jobs: int,
    replicas: int,
    cron: str,
    fires: int,
    warmup: float,
    worker: dict[str, Any] | None = None,
    settle: float = 60.0,
) -> CronOutcome:
    workdir.mkdir(parents=True, exist_ok=True)
    starts = workdir / "starts.jsonl"
    starts.unlink(missing_ok=True)
    names = [f"j{i:05d}" for i in range(jobs)]
    with server.fresh(label) as url:
        config = write_jobrunner_config(
            workdir / "jobrunner.toml",
            url,
            [{"name": n, "func": "bench.jobs:record", "cron": cron} for n in names],
            worker=worker,
        )
        env = {"BENCH_STARTS": str(starts)}
        t0 = time.monotonic()
        procs = [
            start_jobrunner(config, workdir / f"replica{i}.log", env=env) for i in range(replicas)
        ]
        try:
            wait_jobrunner_started(procs, timeout=600)
            startup = time.monotonic() - t0
            ready = datetime.now(UTC) + timedelta(seconds=warmup)
            slots = fire_times(cron, ready, fires)
            first, last = slots[0], slots[-1]
            expected = jobs * fires
            peaks = [0] * replicas

            def settled() -> bool:
                for i, p in enumerate(procs):
                    if not p.alive():
                        raise RuntimeError(f"replica {i} exited:\n{p.tail()}")
                    peaks[i] = max(peaks[i], rss_bytes(p.pid) or 0)
                if datetime.now(UTC) < last:
                    return False
                done = scalar(
                    url,
                    """SELECT count(*) FROM job_runs WHERE scheduled_for BETWEEN %s AND %s
                       AND status NOT IN ('queued', 'running')""",
                    (first, last),
                )
                return int(done) >= expected

            wait = (last - datetime.now(UTC)).total_seconds() + settle
            wait_for(settled, max(wait, settle), 0.5)
        finally:
            codes = stop_all(procs, timeout=90)
        rows = query(
            url,
            """SELECT job_name, scheduled_for, attempt, status, reason,
                      extract(epoch FROM started_at - scheduled_for)::float8,
                      extract(epoch FROM enqueued_at - scheduled_for)::float8,
                      extract(epoch FROM started_at - enqueued_at)::float8
               FROM job_runs WHERE scheduled_for BETWEEN %s AND %s""",
            (first, last),
        )
    keyed = Counter((r[0], r[1], r[2]) for r in rows)
    present = {(r[0], r[1]) for r in rows}
    want = {(n, s) for n in names for s in slots}
    started: Counter[tuple[str, str, int]] = Counter()
    began: dict[tuple[str, str], float] = {}  # first attempt's first start, per slot
    if starts.exists():
        import json

        for line in starts.read_text().splitlines():
            if line.strip():
                e = json.loads(line)
                slot = datetime.fromisoformat(e["slot"]) if e["slot"] else None
                if slot is not None and first <= slot <= last:
                    started[(e["job"], e["slot"], e["attempt"])] += 1
                    if e["attempt"] == 1:
                        lag = e["t"] - slot.timestamp()
                        key = (e["job"], e["slot"])
                        began[key] = min(began.get(key, lag), lag)
    return CronOutcome(
        expected=len(want),
        rows=len(rows),
        lags_ms=[lag * 1000 for lag in began.values()],
        claim_ms=[r[5] * 1000 for r in rows if r[5] is not None and r[2] == 1],
        record_ms=[r[6] * 1000 for r in rows if r[6] is not None and r[2] == 1],
        wait_ms=[r[7] * 1000 for r in rows if r[7] is not None and r[2] == 1],
        duplicate_rows=sum(c - 1 for c in keyed.values() if c > 1),
        duplicate_starts=sum(c - 1 for c in started.values() if c > 1),
        missed=len(want - present),
        skipped=Counter(r[4] or "?" for r in rows if r[3] == "skipped"),
        not_succeeded=Counter(r[3] for r in rows if r[3] not in ("succeeded", "skipped")),
        rss_mib=[p / 2**20 for p in peaks],
        exit_codes=codes,
        first_slot=first,
        last_slot=last,
        startup_s=startup,
    )


def cron_scenario(
    ctx: Context,
    label: str,
    metrics: list[Metric],
    *,
    jobs: int,
    replicas: int,
    fire_times: int,
    cron: str,
    warmup: float,
    settle: float = 60.0,
    concurrency: int | None = None,
) -> Result:
    """A cron scenario (firelag, scale): `ctx.repeats` fresh runs of `run_cron`, each
    summarised into `metrics`; skips, unfinished rows and bad exit codes become notes.
    The replicas' concurrency: `--concurrency`, else the scenario's, else jobrunner's default."""
    concurrency = ctx.concurrency or concurrency
    result = Result(
        label,
        {
            "jobs": jobs,
            "cron": cron,
            "replicas": replicas,
            "fire times": fire_times,
            "repeats": ctx.repeats,
            "concurrency": concurrency or "default (16)",
        },
        metrics,
    )
    worker = {"concurrency": concurrency} if concurrency else None
    for r in range(ctx.repeats):
        out = ctx.guarded(
            f"{label} r{r}",
            lambda r=r: run_cron(
                ctx.server,
                ctx.dir(f"{label}/r{r}"),
                label=label,
                jobs=jobs,
                replicas=replicas,
                cron=cron,
                fires=fire_times,
                warmup=warmup,
                worker=worker,
                settle=settle,
            ),
        )
        s = out.summary()
        for key, value in s.items():
            if any(m.key == key for m in metrics):
                result.add("jobrunner", key, value)
        if out.skipped:
            result.note(f"r{r}: skipped slots by reason {dict(out.skipped)}")
        if out.not_succeeded:
            result.note(f"r{r}: rows neither succeeded nor skipped {dict(out.not_succeeded)}")
        if any(c != 0 for c in out.exit_codes):
            result.note(f"r{r}: replica exit codes after SIGTERM {out.exit_codes}")
        ctx.say(
            f"  {label} r{r}: p50 {s['p50'] or 0:.1f} ms, p99 {s['p99'] or 0:.1f} ms, "
            f"{out.rows}/{out.expected} rows, dup {s['duplicates']}, missed {s['missed']}, "
            f"RSS {[round(x) for x in out.rss_mib]} MiB, up after {out.startup_s:.1f}s"
        )
    return result
