"""Chaos test: N replicas, two per-second jobs (async and sync), random SIGKILL / SIGTERM /
SIGSTOP+SIGCONT / restart of replicas and random PostgreSQL restarts for a duration; then
count what became of every slot.

    python -m bench.chaos --db postgresql://postgres@127.0.0.1:5432/postgres \
        --replicas 5 --duration 120 --pg-restarts 6 [--runtime 20] [--notify]

It creates a scratch database, runs the replicas against it and prints: slots expected,
started, finished, duplicate starts of one (slot, attempt), slots never started, slots never
finished, attempts of one slot that ran at once, replica exits the harness did not cause, and
start lag p50/p99, with the count of each action. At least one replica is serving at any
time. Jobs use overlap = "allow" (a crashed run's lease must not block later slots) and
retries, so every slot must finish eventually. The jobs record their events in a file, not in
the database, so that a PostgreSQL restart cannot lose them. `--pg-restarts` needs the local
cluster (`pg_ctlcluster`) to be the server of `--db`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

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
[[jobs]]
name = "chaos-runtime"
func = "chaos_jobs:work_async"
retries = 5
retry_backoff = "0.2s"
misfire_grace = "2m"
"""
NOTIFY = """
[[jobs]]
name = "chaos-fail"
func = "chaos_jobs:fail_async"
cron = "* * * * * */2"  # every 2 s (seconds come last)
overlap = "allow"
retries = 1
retry_backoff = "0.2s"
catch_up = "all"
misfire_grace = "2m"
[[notify]]
name = "chaos-hook"
url = "{hook}"
events = ["failed", "exhausted", "lost"]
jobs = ["chaos-fail"]
secret = "{secret}"
"""
SECRET = "chaos-hook-secret-0123456789"
NOTIFY_FAILURES = ("notify_missing", "notify_unexpected", "notify_ids_per_cause", "notify_bad_sig")
RUNTIME_JOB = "chaos-runtime"  # the runtime schedules' job (`--runtime N`): per-second slots


@dataclass
class Replica:
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    stopping: bool = False  # the harness sent SIGKILL or SIGTERM
    paused_until: float = 0.0  # SIGSTOPped until then
    signalled: int = 0

    def start(self, env: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "jobrunner", "run", "-c", str(self.config)]
        with self.log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.started, self.stopping, self.signalled = time.monotonic(), False, 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def serving(self) -> bool:
        """Up, past start-up, not paused and not draining: it schedules and claims."""
        now = time.monotonic()
        return (
            self.alive
            and not self.stopping
            and now - self.started > 3
            and (now >= self.paused_until)
        )

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.stopping, self.signalled = True, sig
        self.proc.send_signal(sig)

    def expected_exit(self) -> bool:
        """Whether its exit is the harness's doing: -9 after SIGKILL, 0 after SIGTERM."""
        code = self.proc.returncode if self.proc is not None else None
        if self.signalled == signal.SIGKILL:
            return code == -signal.SIGKILL
        return self.signalled == signal.SIGTERM and code == 0


def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_cluster() -> list[str] | None:
    """`pg_ctlcluster VERSION main` of the local cluster, or None without one."""
    etc = Path("/etc/postgresql")
    if not shutil.which("pg_ctlcluster") or not etc.is_dir():
        return None
    versions = sorted(p.name for p in etc.iterdir())
    return (
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"] if versions else None
    )


def restart_postgres() -> None:
    cluster = pg_cluster()
    assert cluster is not None
    subprocess.run([*cluster, "restart", "-m", "fast"], check=True, capture_output=True, timeout=60)


def chaos(
    server_url: str,
    replicas: int,
    duration: float,
    seed: int,
    *,
    pg_restarts: int = 0,
    runtime: int = 0,
    notify: bool = False,
) -> dict[str, float]:
    """One chaos run; with `runtime`, that many per-second runtime schedules of
    `RUNTIME_JOB` (keys r0, r1, ...) are created through the client once the replicas are
    up, and their slots are counted as the TOML jobs' are. With `notify`, a failing job's
    `failed`, `exhausted` and `lost` events go to a local receiver (`NOTIFY_FAILURES`)."""
    if pg_restarts and pg_cluster() is None:
        raise SystemExit("--pg-restarts needs the local PostgreSQL cluster (pg_ctlcluster)")
    rng = random.Random(seed)
    name = f"chaos_{uuid.uuid4().hex[:8]}"
    admin = _libpq(server_url)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = _libpq(sa.make_url(server_url).set(database=name).render_as_string(hide_password=False))
    try:
        harness = Harness(url, replicas, rng, runtime, notify=notify)
        try:
            return harness.run(duration, pg_restarts)
        finally:
            harness.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Harness:
    """The replicas of one chaos run and what was done to them."""

    def __init__(
        self,
        url: str,
        replicas: int,
        rng: random.Random,
        runtime: int = 0,
        *,
        notify: bool = False,
    ) -> None:
        self.url, self.rng = url, rng
        self.keys = [f"r{i}" for i in range(runtime)]
        self.hook = Hook() if notify else None
        self.tmp = Path(tempfile.mkdtemp(prefix="jobrunner-chaos-"))
        config = self.tmp / "chaos.toml"
        extra = NOTIFY.format(hook=self.hook.url, secret=SECRET) if self.hook else ""
        config.write_text(CONFIG.format(url=url, here=HERE) + extra)
        self.events = self.tmp / "events.jsonl"
        self.env = {**os.environ, "CHAOS_EVENTS": str(self.events)}
        self.fleet = [Replica(config, self.tmp / f"replica{i}.log") for i in range(replicas)]
        self.actions = {"kill": 0, "term": 0, "pause": 0, "restart": 0, "pg_restart": 0}
        self.unexpected: list[str] = []  # replica exits the harness did not cause

    def run(self, duration: float, pg_restarts: int) -> dict[str, float]:
        for r in self.fleet:
            r.start(self.env)
        time.sleep(3)
        self._create_schedules()
        begin = datetime.now(UTC)
        stop_at = time.monotonic() + duration
        pg_at = sorted(
            time.monotonic() + self.rng.uniform(3, duration - 3) for _ in range(pg_restarts)
        )
        while time.monotonic() < stop_at:
            time.sleep(self.rng.uniform(0.5, 3.0))
            self._resume_paused()
            self._check_exits()
            if pg_at and time.monotonic() >= pg_at[0]:
                pg_at.pop(0)
                restart_postgres()
                self.actions["pg_restart"] += 1
            else:
                self._act()
        end = datetime.now(UTC)
        self._settle()
        result = measure(self.events, begin, end, self.keys)
        if self.hook is not None:
            result.update(self.hook.check(self.url))
        result.update({f"actions_{k}": float(v) for k, v in self.actions.items()})
        result["unexpected_exits"] = float(len(self.unexpected))
        return result

    def close(self) -> None:
        if self.hook is not None:
            self.hook.close()

    def _create_schedules(self) -> None:
        if not self.keys:
            return
        from jobrunner import Client

        with Client.from_url(self.url) as client:
            for key in self.keys:
                client.create_schedule(
                    RUNTIME_JOB, "* * * * * *", key=key, kwargs={"key": key}, catch_up="all"
                )

    def _act(self) -> None:
        rng = self.rng
        down = [r for r in self.fleet if not r.alive]
        up = [r for r in self.fleet if r.serving]
        if down and (len(up) <= 1 or rng.random() < 0.5):
            rng.choice(down).start(self.env)
            self.actions["restart"] += 1
        elif len(up) > 1:  # never stop the last replica that is serving
            victim, roll = rng.choice(up), rng.random()
            if roll < 0.2:  # frozen for 1-6 s: often past lease_ttl (3 s)
                assert victim.proc is not None
                victim.proc.send_signal(signal.SIGSTOP)
                victim.paused_until = time.monotonic() + rng.uniform(1.0, 6.0)
                self.actions["pause"] += 1
            else:
                kill = roll < 0.65
                victim.send(signal.SIGKILL if kill else signal.SIGTERM)
                self.actions["kill" if kill else "term"] += 1

    def _resume_paused(self, *, all_: bool = False) -> None:
        now = time.monotonic()
        for r in self.fleet:
            if r.paused_until and (all_ or now >= r.paused_until) and r.proc is not None:
                r.proc.send_signal(signal.SIGCONT)
                r.paused_until = 0.0

    def _check_exits(self) -> None:
        for r in self.fleet:
            if r.proc is not None and not r.alive and not r.expected_exit():
                tail = r.log.read_text(errors="replace").strip().splitlines()[-1:]
                self.unexpected.append(f"{r.log.name}: exit {r.proc.returncode}: {tail}")
                r.proc = None  # counted once

    def _settle(self) -> None:
        """Everyone up again so retries of the last slots can finish, then a clean stop."""
        self._resume_paused(all_=True)
        self._check_exits()
        for r in self.fleet:
            if not r.alive:
                r.start(self.env)
        time.sleep(12)
        if self.hook is not None:  # delivered by the replicas, before they stop: an event a
            # killed replica had claimed waits out its claim (30 s), one in backoff its delay
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and _pending_events(self.url):
                time.sleep(0.5)
        for r in self.fleet:
            if r.alive:
                r.send(signal.SIGTERM)
        for r in self.fleet:
            if r.proc is not None:
                r.proc.wait(30)
        self._check_exits()


class Hook:
    """A local HTTP receiver of the failing job's notification events (records each with
    whether its signature is valid), and the check of what it got against the database."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, Any], bool]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                ok = self.headers.get("X-Jobrunner-Signature") == f"sha256={digest}"
                owner.got.append((json.loads(body), ok))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def check(self, url: str) -> dict[str, float]:
        """Every expected event (from the runs' final states) received at least once, none
        unexpected, one event id per cause, every signature valid."""
        expected: set[tuple[int, str]] = set()
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT id, status, attempt, max_attempts FROM job_runs "
                "WHERE job_name = 'chaos-fail' AND status IN ('failed', 'lost')"
            ).fetchall()
            other = conn.execute(
                "SELECT count(*) FROM job_runs WHERE job_name = 'chaos-fail' "
                "AND status NOT IN ('failed', 'lost')"
            ).fetchone()
        for rid, status, attempt, most in rows:
            expected.add((rid, status))
            if attempt >= most:
                expected.add((rid, "exhausted"))
        got = {(b["run_id"], b["event"]) for b, _ in self.got}
        ids: dict[tuple[int, str], set[str]] = defaultdict(set)
        for body, _ in self.got:
            ids[(body["run_id"], body["event"])].add(body["event_id"])
        return {
            "notify_expected": float(len(expected)),
            "notify_other_runs": float(other[0] if other else 0),  # of the job, not failed/lost
            "notify_received": float(len(self.got)),
            "notify_missing": float(len(expected - got)),
            "notify_unexpected": float(len(got - expected)),
            "notify_ids_per_cause": float(sum(1 for v in ids.values() if len(v) != 1)),
            "notify_bad_sig": float(sum(1 for _, ok in self.got if not ok)),
            "notify_left_pending": float(_pending_events(url)),  # after every replica stopped
        }


def _pending_events(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM jobrunner_outbox WHERE status = 'pending'"
        ).fetchone()
    return int(row[0]) if row else 0


def measure(
    events: Path, begin: datetime, end: datetime, keys: Sequence[str] = ()
) -> dict[str, float]:
    """What became of every per-second slot of the TOML jobs and of the runtime schedules
    `keys` (as "chaos-runtime/KEY") in (begin, end]."""
    first = begin.replace(microsecond=0) + timedelta(seconds=1)
    last = end.replace(microsecond=0)
    expected = {
        (job, first + timedelta(seconds=i))
        for job in (*JOBS, *(f"{RUNTIME_JOB}/{k}" for k in keys))
        for i in range(int((last - first).total_seconds()) + 1)
    }
    rows = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    for row in rows:  # a runtime schedule's run names its key (its kwargs)
        if row.get("key"):
            row["job"] = f"{row['job']}/{row['key']}"
    starts: dict[tuple[str, datetime, int], int] = defaultdict(int)
    spans: dict[tuple[str, datetime], dict[int, list[float]]] = defaultdict(dict)
    started: set[tuple[str, datetime]] = set()
    finished: set[tuple[str, datetime]] = set()
    for row in rows:
        key = (row["job"], datetime.fromisoformat(row["slot"]))
        if key not in expected:
            continue
        span = spans[key].setdefault(row["attempt"], [row["t"], row["t"]])
        span[0], span[1] = min(span[0], row["t"]), max(span[1], row["t"])
        if row["event"] == "start":
            starts[(*key, row["attempt"])] += 1
            started.add(key)
        elif row["event"] == "finish":
            finished.add(key)
    lags = start_lags(rows, expected)
    return {
        "slots_expected": len(expected),
        "slots_started": len(started),
        "slots_finished": len(finished),
        "duplicate_starts": sum(n - 1 for n in starts.values() if n > 1),
        "never_started": len(expected - started),
        "never_finished": len(expected - finished),
        "overlapping_attempts": sum(overlaps(a) for a in spans.values()),
        "lag_p50_ms": 1000 * statistics.median(lags) if lags else float("nan"),
        "lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))] if lags else float("nan"),
    }


def overlaps(attempts: dict[int, list[float]]) -> int:
    """Attempts of one slot that began before the attempt before them showed its last sign
    of life (its start, its finish, or the end of a cancelled async job)."""
    ordered = [attempts[n] for n in sorted(attempts)]
    return sum(1 for a, b in itertools.pairwise(ordered) if b[0] < a[1])


def start_lags(rows: list[dict[str, Any]], expected: set[tuple[str, datetime]]) -> list[float]:
    """Start lag of each expected slot's first attempt as the job saw it (its own clock:
    the replicas run on this host), sorted."""
    lags = []
    for row in rows:
        slot = datetime.fromisoformat(row["slot"])
        if row["event"] == "start" and row["attempt"] == 1 and (row["job"], slot) in expected:
            lags.append(row["t"] - slot.timestamp())
    return sorted(lags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="PostgreSQL server URL (a scratch db is made)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pg-restarts", type=int, default=0, help="PostgreSQL restarts")
    parser.add_argument(
        "--runtime", type=int, default=0, help="per-second runtime schedules to add"
    )
    parser.add_argument(
        "--notify", action="store_true", help="a failing job whose events a local hook receives"
    )
    args = parser.parse_args()
    result = chaos(
        args.db,
        args.replicas,
        args.duration,
        args.seed,
        pg_restarts=args.pg_restarts,
        runtime=args.runtime,
        notify=args.notify,
    )
    width = max(map(len, result))
    print(f"chaos: {args.replicas} replicas, {args.duration:g}s, seed {args.seed}")
    for key, value in result.items():
        print(f"  {key:<{width}}  {value:g}")
    bad = [k for k in (*FAILURES, *(NOTIFY_FAILURES if args.notify else ())) if result[k]]
    sys.exit(1 if bad else 0)


# What must be zero: a duplicate start, a slot never started or finished, an exit the harness
# did not cause. Overlapping attempts are counted, not required to be zero: a replica frozen
# by SIGSTOP past its renew deadline resumes with its job mid-step (no process can stop a
# frozen one); the fence guards that case.
FAILURES = ("duplicate_starts", "never_started", "never_finished", "unexpected_exits")


if __name__ == "__main__":
    main()
