"""Chaos test: N replicas, two per-second jobs (async and sync), random SIGKILL / SIGTERM /
restart for a duration; then count what became of every slot.

    python -m bench.chaos --db postgresql://postgres@127.0.0.1:5432/postgres \
        --replicas 3 --duration 120

It creates a scratch database, runs the replicas against it and prints: slots expected,
started, finished, duplicate starts of one (slot, attempt), slots never started, slots never
finished, start lag p50/p99. At least one replica is up at any time. Jobs use
overlap = "allow" (a crashed run's lease must not block later slots) and retries, so every
slot must finish eventually.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import sqlalchemy as sa

from bench.chaos_jobs import EVENTS_DDL

HERE = Path(__file__).resolve().parent
JOBS = ("chaos-async", "chaos-sync")
CONFIG = """
[database]
url = "{url}"
[worker]
lease_ttl = "3s"
heartbeat = "1s"
shutdown_grace = "2s"
poll_interval = "0.5s"
import_paths = ["{here}"]
[logging]
format = "json"
level = "warning"
[[jobs]]
name = "chaos-async"
func = "chaos_jobs:work_async"
cron = "* * * * * *"
overlap = "allow"
retries = 5
retry_backoff = "0.2s"
catch_up = "all"
misfire_grace = "2m"
[[jobs]]
name = "chaos-sync"
func = "chaos_jobs:work_sync"
cron = "* * * * * *"
overlap = "allow"
retries = 5
retry_backoff = "0.2s"
catch_up = "all"
misfire_grace = "2m"
"""


@dataclass
class Replica:
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    stopping: bool = False

    def start(self, env: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "jobrunner.cli", "run", "-c", str(self.config)]
        self.proc = subprocess.Popen(
            cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env
        )
        self.started, self.stopping = time.monotonic(), False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def serving(self) -> bool:
        """Up, past start-up and not draining: it schedules and claims."""
        return self.alive and not self.stopping and time.monotonic() - self.started > 3


def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def chaos(server_url: str, replicas: int, duration: float, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    name = f"chaos_{uuid.uuid4().hex[:8]}"
    admin = _libpq(server_url)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = _libpq(sa.make_url(server_url).set(database=name).render_as_string(hide_password=False))
    try:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(EVENTS_DDL)
        return _run(url, replicas, duration, rng)
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run(url: str, replicas: int, duration: float, rng: random.Random) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="jobrunner-chaos-"))
    config = tmp / "chaos.toml"
    config.write_text(CONFIG.format(url=url, here=HERE))
    env = {**os.environ, "CHAOS_DB": url}
    fleet = [Replica(config, tmp / f"replica{i}.log") for i in range(replicas)]
    for r in fleet:
        r.start(env)
    time.sleep(3)
    begin = datetime.now(UTC)
    actions = {"kill": 0, "term": 0, "restart": 0}
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.5, 3.0))
        down = [r for r in fleet if not r.alive]
        up = [r for r in fleet if r.serving]
        if down and (len(up) <= 1 or rng.random() < 0.5):
            rng.choice(down).start(env)
            actions["restart"] += 1
        elif len(up) > 1:  # never stop the last replica that is serving
            victim = rng.choice(up)
            assert victim.proc is not None
            sig = signal.SIGKILL if rng.random() < 0.6 else signal.SIGTERM
            victim.stopping = True
            victim.proc.send_signal(sig)
            actions["kill" if sig == signal.SIGKILL else "term"] += 1
    end = datetime.now(UTC)
    for r in fleet:  # everyone up again so retries of the last slots can finish
        if not r.alive:
            r.start(env)
    time.sleep(12)
    for r in fleet:
        if r.alive and r.proc is not None:
            r.proc.send_signal(signal.SIGTERM)
    for r in fleet:
        if r.proc is not None:
            r.proc.wait(30)
    result = _measure(url, begin, end)
    result.update({f"actions_{k}": float(v) for k, v in actions.items()})
    return result


def _measure(url: str, begin: datetime, end: datetime) -> dict[str, float]:
    first = begin.replace(microsecond=0) + timedelta(seconds=1)
    last = end.replace(microsecond=0)
    expected = {
        (job, first + timedelta(seconds=i))
        for job in JOBS
        for i in range(int((last - first).total_seconds()) + 1)
    }
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT job, slot, attempt, event FROM chaos_events WHERE slot BETWEEN %s AND %s",
            (first, last),
        ).fetchall()
    starts: dict[tuple[str, datetime, int], int] = {}
    started: set[tuple[str, datetime]] = set()
    finished: set[tuple[str, datetime]] = set()
    for job, slot, attempt, event in rows:
        key = (job, slot)
        if event == "start":
            starts[(job, slot, attempt)] = starts.get((job, slot, attempt), 0) + 1
            started.add(key)
        else:
            finished.add(key)
    with psycopg.connect(url) as c:  # start lag as the worker saw it (not the job's connect)
        lags = [
            float(x)
            for (x,) in c.execute(
                "SELECT extract(epoch FROM started_at - scheduled_for) FROM job_runs "
                "WHERE attempt = 1 AND started_at IS NOT NULL AND scheduled_for BETWEEN %s AND %s",
                (first, last),
            )
        ]
    lags.sort()
    return {
        "slots_expected": len(expected),
        "slots_started": len(started & expected),
        "slots_finished": len(finished & expected),
        "duplicate_starts": sum(n - 1 for n in starts.values() if n > 1),
        "never_started": len(expected - started),
        "never_finished": len(expected - finished),
        "lag_p50_ms": 1000 * statistics.median(lags) if lags else float("nan"),
        "lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))] if lags else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="PostgreSQL server URL (a scratch db is made)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = chaos(args.db, args.replicas, args.duration, args.seed)
    width = max(map(len, result))
    print(f"chaos: {args.replicas} replicas, {args.duration:g}s, seed {args.seed}")
    for key, value in result.items():
        print(f"  {key:<{width}}  {value:g}")
    bad = result["duplicate_starts"] + result["never_started"] + result["never_finished"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
