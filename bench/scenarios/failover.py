"""failover: SIGKILL (and SIGTERM) the replica running a job; time until a peer starts it again.

Per repeat and signal, a fresh database and `replicas` replicas (lease_ttl, heartbeat and
shutdown_grace from the command line; defaults: the example config's 30s / 10s and a 1s grace).
One long run (`bench.jobs:sleep`, retries 3) is enqueued; once it is running, the replica
holding it gets the signal. Failover = started_at of the next attempt (the database's clock) -
the moment of the signal (the host clock, corrected by the measured database-host offset).
SIGKILL: the lease must expire (lease_ttl) and a peer's heartbeat must reap it. SIGTERM: the
replica lets the run go on for shutdown_grace, cancels it, releases the lease at once and
exits 0; `handover` is the SIGTERM time minus the grace.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from bench.common import (
    clock_offset,
    enqueue,
    query,
    start_jobrunner,
    stop_all,
    wait_for,
    wait_jobrunner_started,
    write_jobrunner_config,
)
from bench.report import Metric, Result
from bench.scenarios import Context
from jobrunner.config import parse_duration

METRICS = [
    Metric("kill", "SIGKILL to start on a peer", "s", "lower", 2),
    Metric("kill_over_ttl", "SIGKILL: beyond lease_ttl", "s", "lower", 2),
    Metric("term", "SIGTERM to start on a peer", "s", "lower", 3),
    Metric("term_handover", "SIGTERM: beyond shutdown_grace", "s", "lower", 3),
    Metric("term_exit", "SIGTERM: replica exit code", "", None, 0),
]


def run(
    ctx: Context,
    replicas: int = 2,
    lease_ttl: str = "30s",
    heartbeat: str = "10s",
    shutdown_grace: str = "1s",
    max_wait: float | None = None,
) -> Result:
    """`max_wait` caps the wait for the peer's start (the smoke test's bound; None: long enough
    for lease_ttl + heartbeat + grace + 30 s)."""
    ttl = parse_duration(lease_ttl).total_seconds()
    beat = parse_duration(heartbeat).total_seconds()
    grace = parse_duration(shutdown_grace).total_seconds()
    result = Result(
        "failover",
        {
            "replicas": replicas,
            "lease_ttl": lease_ttl,
            "heartbeat": heartbeat,
            "shutdown_grace": shutdown_grace,
            "repeats": ctx.repeats,
        },
        METRICS,
    )
    worker = {"lease_ttl": lease_ttl, "heartbeat": heartbeat, "shutdown_grace": shutdown_grace}
    wait = ttl + beat + grace + 30
    for r in range(ctx.repeats):
        for sig in (signal.SIGKILL, signal.SIGTERM):
            out = ctx.guarded(
                f"failover r{r} {sig.name}",
                lambda r=r, sig=sig: once(
                    ctx, r, sig, replicas, worker, timeout=min(wait, max_wait or wait)
                ),
            )
            if out["failover"] is None:
                result.note(f"r{r} {sig.name}: no peer started the run ({out})")
            if sig == signal.SIGKILL:
                result.add("jobrunner", "kill", out["failover"])
                result.add(
                    "jobrunner",
                    "kill_over_ttl",
                    None if out["failover"] is None else out["failover"] - ttl,
                )
            else:
                result.add("jobrunner", "term", out["failover"])
                result.add(
                    "jobrunner",
                    "term_handover",
                    None if out["failover"] is None else out["failover"] - grace,
                )
                result.add("jobrunner", "term_exit", out["exit"])
                if out["exit"] != 0:
                    result.note(f"r{r}: replica exited {out['exit']} after SIGTERM")
            ctx.say(f"  failover r{r} {sig.name}: {out}")
    return result


def once(
    ctx: Context,
    r: int,
    sig: signal.Signals,
    replicas: int,
    worker: dict[str, Any],
    timeout: float,
) -> dict[str, Any]:
    workdir = ctx.dir(f"failover/r{r}-{sig.name}")
    with ctx.server.fresh("failover") as url:
        config = write_jobrunner_config(
            workdir / "jobrunner.toml",
            url,
            [
                {
                    "name": "long",
                    "func": "bench.jobs:sleep",
                    "retries": 3,
                    "kwargs": {"seconds": 3600},
                }
            ],
            worker=worker,
        )
        procs = [start_jobrunner(config, workdir / f"replica{i}.log") for i in range(replicas)]
        try:
            wait_jobrunner_started(procs)
            (run_id,) = enqueue(url, "long")

            def holder() -> Any:
                rows = query(
                    url,
                    """SELECT w.pid, r.worker_id FROM job_runs r
                       JOIN jobrunner_workers w ON w.worker_id = r.worker_id
                       WHERE r.id = %s AND r.status = 'running'""",
                    (run_id,),
                )
                return rows[0] if rows else None

            wait_for(lambda: holder() is not None, 30, 0.02)
            pid, holder_id = holder()
            victim = next(p for p in procs if p.pid == pid)
            time.sleep(0.5)
            offset = clock_offset(url)
            t_signal = time.time() + offset
            victim.signal(sig)

            def next_start() -> Any:
                rows = query(
                    url,
                    """SELECT extract(epoch FROM started_at)::float8, worker_id FROM job_runs
                       WHERE job_name = 'long' AND attempt > 1 AND started_at IS NOT NULL
                       ORDER BY attempt LIMIT 1""",
                )
                return rows[0] if rows else None

            wait_for(lambda: next_start() is not None, timeout, 0.02)
            started = next_start()
            exit_code = victim.wait(60) if sig == signal.SIGTERM else None
            first = query(url, "SELECT status, reason FROM job_runs WHERE id = %s", (run_id,))
        finally:
            stop_all(procs, timeout=30)
    return {
        "failover": None if started is None else round(started[0] - t_signal, 3),
        "by_peer": None if started is None else started[1] != holder_id,
        "first_attempt": tuple(first[0]) if first else None,
        "exit": exit_code,
    }
