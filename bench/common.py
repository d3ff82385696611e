"""What every scenario needs: fresh databases, worker processes, configs, statistics, RSS."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB_PREFIX = "bench_"


# -- databases ----------------------------------------------------------------------------


def libpq_url(url: str) -> str:
    """`postgresql://...` (what psycopg and the peers take) from any PostgreSQL URL."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise SystemExit(f"--db must be a PostgreSQL URL, got {parsed.get_backend_name()!r}")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class Server:
    """A PostgreSQL server; creates fresh databases and drops every one of them at the end."""

    def __init__(self, url: str) -> None:
        self.url = libpq_url(url)
        self.created: list[str] = []

    def url_for(self, database: str, **query: str) -> str:
        parsed = sa.make_url(self.url).set(database=database)
        if query:
            parsed = parsed.update_query_dict(query)
        return parsed.render_as_string(hide_password=False)

    def admin(self) -> psycopg.Connection[Any]:
        return connect(self.url)

    def create(self, label: str) -> str:
        """A new empty database; returns its URL."""
        name = f"{BENCH_DB_PREFIX}{label}_{uuid.uuid4().hex[:8]}".lower()
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url_for(name)

    def drop(self, url: str) -> None:
        name = sa.make_url(url).database
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def drop_all(self, attempts: int = 10) -> None:
        """Drop every database this harness created (retrying while the server restarts)."""
        for _ in range(attempts):
            for name in list(self.created):
                with contextlib.suppress(psycopg.Error):
                    self.drop(self.url_for(name))
            if not self.created:
                return
            time.sleep(3)
        print(f"could not drop {self.created}", file=sys.stderr)

    @contextlib.contextmanager
    def fresh(self, label: str) -> Iterator[str]:
        url = self.create(label)
        try:
            yield url
        finally:
            self.drop(url)

    def version(self) -> str:
        with self.admin() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


def connect(url: str, wait: float = 90.0) -> psycopg.Connection[Any]:
    """An autocommit connection; retried while the server is down or restarting (on a shared
    machine other people's outage tests restart it)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def enqueue(url: str, job: str, count: int = 1) -> list[int]:
    """Queue `count` runs of `job` through jobrunner's own client store; their ids."""
    from jobrunner.store.access import ClientStore

    store = ClientStore.from_url(url)
    try:
        return store.enqueue_many(job, [None] * count)
    finally:
        store.close()


def query(url: str, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[Any]:
    """Rows of one statement on its own short connection (autocommit)."""
    for attempt in range(3):
        try:
            with connect(url) as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.OperationalError:
            if attempt == 2:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def server_started(url: str) -> float:
    """When the server last started (epoch seconds): a change means a restart in between."""
    return float(scalar(url, "SELECT extract(epoch FROM pg_postmaster_start_time())::float8"))


def scalar(url: str, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
    rows = query(url, sql, params)
    return rows[0][0] if rows else None


def clock_offset(url: str) -> float:
    """Database clock minus host clock, in seconds (same machine: about zero)."""
    with connect(url) as conn:
        best = (math.inf, 0.0)
        for _ in range(5):
            t0 = time.time()
            row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
            t1 = time.time()
            assert row is not None
            best = min(best, (t1 - t0, float(row[0]) - (t0 + t1) / 2))
        return best[1]


# -- processes ----------------------------------------------------------------------------

_LIVE: list[Proc] = []


class Proc:
    """A child process (a worker) with its output in a log file."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=str(cwd or ROOT),
        )
        _LIVE.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    out.append(json.loads(line))
        return out

    def has_event(self, name: str) -> bool:
        needle = f'"event": "{name}"'
        return needle in self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()
            if self in _LIVE:
                _LIVE.remove(self)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, wait; SIGKILL if it does not exit in time."""
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.wait()

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def stop_all(procs: Sequence[Proc] | None = None, timeout: float = 60) -> list[int]:
    """Stop the given workers (default: every live one this harness started), in parallel."""
    targets = list(_LIVE if procs is None else procs)
    for p in targets:
        p.signal(signal.SIGTERM)
    codes = []
    deadline = time.monotonic() + timeout
    for p in targets:
        try:
            codes.append(p.wait(max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(-9)
    return codes


def kill_all() -> None:
    for p in list(_LIVE):
        with contextlib.suppress(Exception):
            p.kill()


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (psutil if installed, else /proc)."""
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        pass
    except Exception:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# -- jobrunner ----------------------------------------------------------------------------


def jobrunner_cmd() -> list[str]:
    """The `jobrunner` console script next to this Python, else `python -m jobrunner.cli`."""
    script = Path(sys.executable).with_name("jobrunner")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "jobrunner.cli"]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def write_jobrunner_config(
    path: Path,
    db_url: str,
    jobs: Sequence[Mapping[str, Any]],
    *,
    worker: Mapping[str, Any] | None = None,
    listen_url: str | None = None,
    log_level: str = "info",
    notify: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """A config whose jobs import from bench/jobs.py. Unset [worker] keys keep their defaults
    (the values config.example.toml spells out)."""
    settings = {"import_paths": [str(ROOT)], **(worker or {})}
    lines = ["[database]", f"url = {toml_value(db_url)}"]
    if listen_url:
        lines.append(f"listen_url = {toml_value(listen_url)}")
    lines += ["", "[worker]", *(f"{k} = {toml_value(v)}" for k, v in settings.items())]
    lines += ["", "[logging]", 'format = "json"', f"level = {toml_value(log_level)}"]
    chunks = ["\n".join(lines)]
    for job in jobs:
        chunks.append("[[jobs]]\n" + "\n".join(f"{k} = {toml_value(v)}" for k, v in job.items()))
    for target in notify:
        chunks.append(
            "[[notify]]\n" + "\n".join(f"{k} = {toml_value(v)}" for k, v in target.items())
        )
    path.write_text("\n\n".join(chunks) + "\n")
    return path


def start_jobrunner(
    config: Path,
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> Proc:
    return Proc([*prefix, *jobrunner_cmd(), "run", "-c", str(config)], log_path, env=env)


def wait_jobrunner_started(procs: Sequence[Proc], timeout: float = 120) -> None:
    def ready() -> bool:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"worker exited {p.proc.returncode}:\n{p.tail()}")
        return all(p.has_event("worker started") for p in procs)

    if not wait_for(ready, timeout, 0.1):
        raise RuntimeError(f"workers not started within {timeout}s:\n{procs[0].tail()}")


# -- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
