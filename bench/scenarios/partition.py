"""partition: cut the replica running a job off from PostgreSQL; do its attempt and the peer's
retry ever run at once?

Per repeat and kind of job (async, sync in a child process, sync in a thread that reads
`ctx.cancelled`): a fresh database, replica A through a TCP proxy (bench/pgproxy.py) and
replica B direct, lease_ttl 4s and heartbeat 1s. A long job (`bench.jobs:ticking`, a line
every 20 ms to a file) starts on A; then the proxy stops forwarding bytes (the sockets stay
open, so A's calls hang and nothing fails). B takes the expired lease over and runs attempt 2.
From the job's own lines: when attempt 1 stopped and attempt 2 began, both after the cut, and
the gap between them (negative = they ran at once). The proxy is then opened again and A must
carry on (it is not restarted).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import enqueue, query, start_jobrunner, stop_all, wait_for, wait_jobrunner_started
from bench.common import write_jobrunner_config as write_config
from bench.pgproxy import CountingProxy, Proxies
from bench.report import Metric, Result
from bench.scenarios import Context

KINDS = {
    "async": {"func": "bench.jobs:ticking"},
    "process": {"func": "bench.jobs:ticking_sync", "isolation": "process"},
    "thread": {"func": "bench.jobs:ticking_sync"},
}
WORKER = {"lease_ttl": "4s", "heartbeat": "1s", "shutdown_grace": "1s", "poll_interval": "0.2s"}
METRICS = [
    Metric("stopped", "attempt 1 stopped, after the cut", "s", "lower", 2),
    Metric("retried", "attempt 2 began, after the cut", "s", None, 2),
    Metric("gap", "attempt 2 began after attempt 1 stopped (< 0: at once)", "s", "higher", 2),
    Metric("outcomes", "outcomes lost then succeeded (1 = yes)", "", "higher", 0),
    Metric("carried_on", "cut-off replica alive and heartbeating after (1 = yes)", "", None, 0),
]


def run(ctx: Context) -> Result:
    result = Result("partition", {**WORKER, "repeats": ctx.repeats}, METRICS)
    server = sa.make_url(ctx.server.url)
    proxies = Proxies(server.host or "127.0.0.1", server.port or 5432)
    try:
        for r in range(ctx.repeats):
            for kind in KINDS:
                out = ctx.guarded(
                    f"partition r{r} {kind}", lambda r=r, kind=kind: once(ctx, proxies, r, kind)
                )
                for key, value in out.items():
                    result.add(kind, key, value)
                ctx.say(f"  partition r{r} {kind}: {out}")
                if out["gap"] is None or out["gap"] < 0:
                    result.note(f"r{r} {kind}: the two attempts overlapped ({out})")
    finally:
        proxies.close()
    return result


def through(proxy: CountingProxy, url: str) -> str:
    """`url`, reached through `proxy` (plain TCP: the proxy reads no TLS)."""
    return (
        sa.make_url(url)
        .set(host="127.0.0.1", port=proxy.port)
        .update_query_dict({"sslmode": "disable", "gssencmode": "disable"})
        .render_as_string(hide_password=False)
    )


def spans(events: Path) -> dict[int, tuple[float, float]]:
    """Per attempt: when its job began and its last sign of life."""
    found: dict[int, tuple[float, float]] = {}
    for line in events.read_text().splitlines():
        row = json.loads(line)
        first, last = found.get(row["attempt"], (row["t"], row["t"]))
        found[row["attempt"]] = (min(first, row["t"]), max(last, row["t"]))
    return found


def once(ctx: Context, proxies: Proxies, r: int, kind: str) -> dict[str, Any]:
    workdir = ctx.dir(f"partition/r{r}-{kind}")
    events = workdir / "events.jsonl"
    events.unlink(missing_ok=True)
    env = {"BENCH_EVENTS": str(events)}
    job = {"name": "long", **KINDS[kind], "kwargs": {"seconds": 14}, "retries": 1}
    proxy = proxies.new()
    with ctx.server.fresh("partition") as url:
        cut = write_config(workdir / "a.toml", through(proxy, url), [job], worker=WORKER)
        direct = write_config(workdir / "b.toml", url, [job], worker=WORKER)
        a = start_jobrunner(cut, workdir / "a.log", env=env)
        procs = [a]
        try:
            wait_jobrunner_started(procs)
            (run_id,) = enqueue(url, "long")
            status = "SELECT status FROM job_runs WHERE id = %s"
            wait_for(lambda: query(url, status, (run_id,))[0][0] == "running", 30, 0.02)
            procs.append(start_jobrunner(direct, workdir / "b.log", env=env))
            wait_jobrunner_started(procs)
            time.sleep(1.5)  # a few of A's renewals
            proxy.freeze()
            cut_at = time.time()
            done = "SELECT count(*) FROM job_runs WHERE attempt = 2 AND status = 'succeeded'"
            wait_for(lambda: query(url, done)[0][0] == 1, 40, 0.1)
            proxy.thaw()
            thawed = time.time()
            carried = _carried_on(url, a, thawed)
            outcomes = query(url, "SELECT attempt, status FROM job_runs ORDER BY attempt")
        finally:
            proxy.thaw()
            stop_all(procs, timeout=30)
    seen = spans(events)
    first, second = seen.get(1), seen.get(2)
    return {
        "stopped": None if first is None else round(first[1] - cut_at, 3),
        "retried": None if second is None else round(second[0] - cut_at, 3),
        "gap": None if first is None or second is None else round(second[0] - first[1], 3),
        "outcomes": float([tuple(o) for o in outcomes] == [(1, "lost"), (2, "succeeded")]),
        "carried_on": float(carried),
    }


def _carried_on(url: str, a: Any, since: float) -> bool:
    """Whether A is alive and its heartbeat wrote `last_seen` after `since` (Unix time)."""
    seen = (
        "SELECT count(*) FROM jobrunner_workers WHERE pid = %s "
        "AND extract(epoch FROM last_seen) > %s"
    )
    fresh = wait_for(lambda: query(url, seen, (a.pid, since + 0.5))[0][0] == 1, 20, 0.1)
    return fresh and a.alive()
