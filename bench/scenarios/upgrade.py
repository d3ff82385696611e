"""upgrade: a rolling upgrade, workers of an earlier commit and of this checkout on one database.

A fresh database; two per-second cron jobs and a queue job. Three replicas of the earlier
commit (`--old REV`, installed once into a cached virtual environment from `git archive`) run
alone; `jobrunner db upgrade` of this checkout migrates the schema under them; then each is
replaced in turn by a replica of this checkout (start the new one, then
SIGTERM the old one), with a few seconds of both in between; finally the new ones run alone.
Over the whole window: every slot started exactly once and finished, none missed, queued runs
all ran, both versions ran slots, every replica exited 0 after its SIGTERM.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import ROOT, Proc, enqueue, query, stop_all, wait_jobrunner_started
from bench.common import write_jobrunner_config as write_config
from bench.report import Metric, Result
from bench.scenarios import Context

CACHE = Path.home() / ".cache" / "jobrunner-bench"
JOBS: list[dict[str, Any]] = [
    {"name": "tick-a", "func": "bench.jobs:record", "cron": "* * * * * *", "overlap": "allow"},
    {"name": "tick-b", "func": "bench.jobs:record", "cron": "* * * * * *", "overlap": "allow"},
    {"name": "queued", "func": "bench.jobs:record", "overlap": "allow", "max_concurrency": 8},
]
WORKER = {"lease_ttl": "4s", "heartbeat": "1s", "shutdown_grace": "2s", "poll_interval": "0.2s"}
METRICS = [
    Metric("expected", "slots expected", "", None, 0),
    Metric("duplicates", "duplicate starts", "", "lower", 0),
    Metric("missed", "slots never started", "", "lower", 0),
    Metric("unfinished", "slots never finished", "", "lower", 0),
    Metric("queued_left", "queued runs not succeeded", "", "lower", 0),
    Metric("by_old", "slots run by the old commit", "", None, 0),
    Metric("by_new", "slots run by this checkout", "", None, 0),
    Metric("bad_exits", "replica exits other than 0 after SIGTERM", "", "lower", 0),
]


def run(ctx: Context, old: str = "HEAD~1", replicas: int = 3, overlap: float = 5.0) -> Result:
    sha = _rev(old)
    result = Result("upgrade", {"old": f"{old} ({sha[:10]})", "replicas": replicas}, METRICS)
    old_bin = install(sha, ctx)
    for r in range(ctx.repeats):
        out = ctx.guarded(f"upgrade r{r}", lambda r=r: once(ctx, r, old_bin, replicas, overlap))
        for key, value in out.items():
            result.add("jobrunner", key, value)
        ctx.say(f"  upgrade r{r}: {out}")
    return result


def _rev(rev: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True, text=True, check=True
    ).stdout.strip()


def install(sha: str, ctx: Context) -> Path:
    """The `jobrunner` script of commit `sha`, in a virtual environment made once per commit."""
    venv = CACHE / f"venv-{hashlib.sha256(sha.encode()).hexdigest()[:12]}"
    script = venv / "bin" / "jobrunner"
    if script.exists():
        return script
    src = CACHE / f"src-{sha[:12]}"
    src.mkdir(parents=True, exist_ok=True)
    ctx.say(f"  installing jobrunner {sha[:10]} into {venv}")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, str(src)], check=True, capture_output=True)
    return script


def once(ctx: Context, r: int, old_bin: Path, replicas: int, overlap: float) -> dict[str, Any]:
    workdir = ctx.dir(f"upgrade/r{r}")
    starts = workdir / "starts.jsonl"
    starts.unlink(missing_ok=True)
    env = {"BENCH_STARTS": str(starts)}
    new_cmd = [sys.executable, "-m", "jobrunner"]
    with ctx.server.fresh("upgrade") as url:
        config = write_config(workdir / "jobrunner.toml", url, JOBS, worker=WORKER)

        def start(cmd: list[str], name: str) -> Proc:
            return Proc([*cmd, "run", "-c", str(config)], workdir / f"{name}.log", env=env)

        olds = [start([str(old_bin)], f"old{i}") for i in range(replicas)]
        news: list[Proc] = []
        exits: list[int] = []
        try:
            wait_jobrunner_started(olds)
            begin = datetime.now(UTC)
            time.sleep(overlap)
            # the schema first, as docs/operations.md says: the old replicas keep running
            subprocess.run([*new_cmd, "db", "upgrade", "-c", str(config)], check=True)
            queued = enqueue(url, "queued", 200)
            for i, old in enumerate(olds):
                news.append(start(new_cmd, f"new{i}"))
                wait_jobrunner_started(news)
                time.sleep(overlap)
                exits.append(old.stop(30))
            queued += enqueue(url, "queued", 200)
            time.sleep(overlap)
            end = datetime.now(UTC)
            time.sleep(3)  # the last slots finish
        finally:
            exits += stop_all(news, timeout=30)
            stop_all(olds, timeout=5)
        old_pids = {str(p.pid) for p in olds}
        return _measure(url, starts, (begin, end), queued, exits, old_pids)


def _measure(
    url: str,
    starts: Path,
    window: tuple[datetime, datetime],
    queued: list[int],
    exits: list[int],
    old_pids: set[str],
) -> dict[str, Any]:
    begin, end = window
    first = begin.replace(microsecond=0) + timedelta(seconds=1)
    last = end.replace(microsecond=0) - timedelta(seconds=1)
    n = int((last - first).total_seconds()) + 1
    expected = {
        (job, first + timedelta(seconds=i)) for job in ("tick-a", "tick-b") for i in range(n)
    }
    rows = [json.loads(line) for line in starts.read_text().splitlines() if line.strip()]
    counts: dict[tuple[str, datetime, int], int] = {}
    for row in rows:
        if row["slot"]:
            key = (row["job"], datetime.fromisoformat(row["slot"]), row["attempt"])
            counts[key] = counts.get(key, 0) + 1
    started = {(job, slot) for job, slot, _ in counts}
    done = query(
        url,
        "SELECT job_name, scheduled_for, worker_id FROM job_runs "
        "WHERE status = 'succeeded' AND trigger = 'schedule'",
    )
    finished = {(job, slot) for job, slot, _ in done}
    left = query(
        url, "SELECT count(*) FROM job_runs WHERE id = ANY(%s) AND status <> 'succeeded'", (queued,)
    )[0][0]
    # a worker id is hostname-pid-suffix
    by_old = [w.rsplit("-", 2)[1] in old_pids for job, slot, w in done if (job, slot) in expected]
    return {
        "expected": len(expected),
        "duplicates": sum(c - 1 for c in counts.values() if c > 1),
        "missed": len(expected - started),
        "unfinished": len(expected - finished),
        "queued_left": left,
        "by_old": sum(by_old),
        "by_new": len(by_old) - sum(by_old),
        "bad_exits": sum(1 for code in exits if code != 0),
    }
