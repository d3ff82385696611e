"""One adapter per system under test: jobrunner, procrastinate, pgqueuer.

Each one sets up its schema in a fresh database, enqueues no-op runs (one at a time through its
public client API, and in bulk through its bulk API), starts worker processes and reads back,
from its own tables, when each run was enqueued, started and finished. All timestamps come from
the database (`now()` of the transaction that wrote them), so the systems are measured alike.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from bench.common import (
    Proc,
    query,
    scalar,
    start_jobrunner,
    wait_for,
    wait_jobrunner_started,
    write_jobrunner_config,
)

PEERS = ("procrastinate", "pgqueuer")
ALL_SYSTEMS = ("jobrunner", *PEERS)


class System:
    """What a scenario needs from a system under test."""

    name: ClassVar[str]

    def __init__(
        self,
        db_url: str,
        workdir: Path,
        *,
        concurrency: int | None = None,
        worker_url: str | None = None,
    ) -> None:
        self.db_url = db_url
        self.worker_url = worker_url or db_url  # what the workers connect to
        self.workdir = workdir
        self.concurrency = concurrency
        self.procs: list[Proc] = []

    # setup / teardown
    def setup(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # enqueue
    def enqueue_each(self, n: int) -> float:
        """Enqueue n runs one by one (one transaction each); returns the seconds it took."""
        raise NotImplementedError

    def enqueue_bulk(self, n: int) -> float:
        """Enqueue n runs with the system's bulk path; returns the seconds it took."""
        raise NotImplementedError

    # workers
    def worker_argv(self) -> list[str]:
        raise NotImplementedError

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_PEER_DSN": self.worker_url}

    def start_worker(self) -> Proc:
        n = len(self.procs)
        proc = Proc(
            self.worker_argv(), self.workdir / f"{self.name}-worker{n}.log", env=self.worker_env()
        )
        self.procs.append(proc)
        return proc

    def wait_ready(self, timeout: float = 60) -> None:
        """Every started worker is up: one warm-up run goes through."""
        self.enqueue_each(1)
        if not wait_for(lambda: self.unfinished() == 0, timeout, 0.05):
            tails = "\n".join(p.tail() for p in self.procs)
            raise RuntimeError(f"{self.name}: warm-up run not done within {timeout}s\n{tails}")

    # reading back (database timestamps, epoch seconds)
    def unfinished(self) -> int:
        raise NotImplementedError

    def done_window(self) -> tuple[int, float | None, float | None]:
        """(runs succeeded, first start, last finish)."""
        raise NotImplementedError

    def latencies(self) -> list[float]:
        """Enqueue-to-start seconds of every started run, in enqueue order."""
        raise NotImplementedError


# -- jobrunner ----------------------------------------------------------------------------


class Jobrunner(System):
    name = "jobrunner"
    # A trigger-only job at the defaults: queue-style (overlap "allow"), as every peer runs
    # queued work.
    NOOP: ClassVar[Mapping[str, Any]] = {"name": "noop", "func": "bench.jobs:noop"}

    def __init__(
        self,
        db_url: str,
        workdir: Path,
        *,
        concurrency: int | None = None,
        worker_url: str | None = None,
        jobs: Sequence[Mapping[str, Any]] = (NOOP,),
        kwargs: Sequence[Mapping[str, Any]] = (),
        notify: Sequence[Mapping[str, Any]] = (),
        worker_env: Mapping[str, str] | None = None,
        worker_prefix: Sequence[str] = (),
    ) -> None:
        """`jobs`: the config's `[[jobs]]`; `enqueue_*` queue runs of the first one, with
        `kwargs` in turn (none by default). Workers run with `worker_env` added to the
        environment, under the command `worker_prefix` if any."""
        super().__init__(db_url, workdir, concurrency=concurrency, worker_url=worker_url)
        self.jobs = list(jobs)
        self.notify = list(notify)  # [[notify]] tables
        self.job = str(self.jobs[0]["name"])
        self.kwargs: list[Mapping[str, Any] | None] = [*kwargs] or [None]
        self.worker_env, self.worker_prefix = worker_env, tuple(worker_prefix)

    def _kwargs(self, n: int) -> list[Mapping[str, Any] | None]:
        return [self.kwargs[i % len(self.kwargs)] for i in range(n)]

    def setup(self) -> None:
        from jobrunner.config import load_config
        from jobrunner.records import catalog_entries
        from jobrunner.store import migrate
        from jobrunner.store.access import WorkerStore

        worker = {} if self.concurrency is None else {"concurrency": self.concurrency}
        self.config = write_jobrunner_config(
            self.workdir / f"{self.name}.toml",
            self.worker_url,
            self.jobs,
            worker=worker,
            notify=self.notify,
        )
        self.store = WorkerStore.from_url(self.db_url)
        migrate.upgrade(self.store.engine)
        cfg = load_config(self.config, import_funcs=False)
        # What a worker publishes at start, so that runs can be enqueued before any worker runs.
        entries = catalog_entries(cfg.jobs)
        self.store.publish_catalog(entries, "bench")

        self.client = _jobrunner_client(self.db_url, self.store)

    def close(self) -> None:
        self.store.close()
        close = getattr(self.client, "close", None)
        if close is not None and self.client is not self.store:
            close()

    def enqueue_each(self, n: int, **options: Any) -> float:
        """Through the public client (`jobrunner.client.Client.enqueue`), one call per run;
        `options` are the client's (`priority=...`)."""
        enqueue, job, kwargs = self.client.enqueue, self.job, self._kwargs(n)
        t0 = time.perf_counter()
        for kw in kwargs:
            enqueue(job, kw, **options)
        return time.perf_counter() - t0

    def enqueue_bulk(self, n: int) -> float:
        """Through the public bulk API (`Client.enqueue_many`): one statement, one NOTIFY."""
        kwargs = self._kwargs(n)
        t0 = time.perf_counter()
        self.client.enqueue_many(self.job, kwargs)
        return time.perf_counter() - t0

    def start_worker(self) -> Proc:
        n = len(self.procs)
        log = self.workdir / f"{self.name}-worker{n}.log"
        proc = start_jobrunner(self.config, log, env=self.worker_env, prefix=self.worker_prefix)
        self.procs.append(proc)
        return proc

    def wait_ready(self, timeout: float = 60) -> None:
        wait_jobrunner_started(self.procs, timeout)
        super().wait_ready(timeout)

    def unfinished(self) -> int:
        return int(
            scalar(
                self.db_url, "SELECT count(*) FROM job_runs WHERE status IN ('queued','running')"
            )
        )

    def done_window(self) -> tuple[int, float | None, float | None]:
        """(runs that ended succeeded, or failed where the job is meant to fail, ...)."""
        row = query(
            self.db_url,
            """SELECT count(*) FILTER (WHERE status = 'succeeded'
                                         OR (status = 'failed' AND job_name LIKE 'fail%%')),
                      extract(epoch FROM min(started_at))::float8,
                      extract(epoch FROM max(finished_at))::float8
               FROM job_runs""",
        )[0]
        return int(row[0]), row[1], row[2]

    def latencies(self, priority: int | None = None) -> list[float]:
        """As `System.latencies`; with `priority`, of the runs of that priority only."""
        rows = query(
            self.db_url,
            """SELECT extract(epoch FROM started_at - enqueued_at)::float8 FROM job_runs
               WHERE started_at IS NOT NULL AND (%(p)s::int IS NULL OR priority = %(p)s::int)
               ORDER BY id""",
            {"p": priority},
        )
        return [r[0] for r in rows]


def _jobrunner_client(url: str, store: Any) -> Any:
    """`jobrunner.client.Client` where it exists, else the store (same `enqueue`)."""
    try:
        from jobrunner.client import Client
    except ImportError:
        return store
    return Client.from_url(url)


# -- peers --------------------------------------------------------------------------------


class _AsyncPeer(System):
    """A peer whose client API is async: calls run on one event loop kept for the adapter."""

    def setup(self) -> None:
        self._runner = asyncio.Runner()
        self.install()
        self._runner.run(self.open())

    def run(self, coro: Any) -> Any:
        return self._runner.run(coro)

    def close(self) -> None:
        self.run(self.shut())
        self._runner.close()

    def install(self) -> None:
        raise NotImplementedError

    async def open(self) -> None:
        raise NotImplementedError

    async def shut(self) -> None:
        raise NotImplementedError

    def _cli(self, *args: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "BENCH_PEER_DSN": self.db_url},
            cwd=str(Path(__file__).resolve().parent.parent),
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


class Procrastinate(_AsyncPeer):
    name = "procrastinate"
    APP = "bench.peers.procrastinate_app.app"

    def install(self) -> None:
        self._cli("procrastinate", "--app", self.APP, "schema", "--apply")

    async def open(self) -> None:
        import procrastinate

        from bench.peers import procrastinate_app

        self._swap = procrastinate_app.app.replace_connector(
            procrastinate.PsycopgConnector(conninfo=self.db_url)
        )
        self.app = self._swap.__enter__()
        await self.app.open_async()
        self.task = procrastinate_app.noop

    async def shut(self) -> None:
        await self.app.close_async()
        self._swap.__exit__(None, None, None)

    def enqueue_each(self, n: int) -> float:
        async def go() -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                await self.task.defer_async()
            return time.perf_counter() - t0

        return float(self.run(go()))

    def enqueue_bulk(self, n: int) -> float:
        async def go() -> float:
            t0 = time.perf_counter()
            await self.task.batch_defer_async(*({} for _ in range(n)))
            return time.perf_counter() - t0

        return float(self.run(go()))

    def worker_argv(self) -> list[str]:
        concurrency = self.concurrency or 10
        return [
            sys.executable,
            "-m",
            "procrastinate",
            "--app",
            self.APP,
            "worker",
            "--concurrency",
            str(concurrency),
        ]

    def unfinished(self) -> int:
        return int(
            scalar(
                self.db_url,
                "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo','doing')",
            )
        )

    def done_window(self) -> tuple[int, float | None, float | None]:
        row = query(
            self.db_url,
            """SELECT count(*) FILTER (WHERE type = 'succeeded'),
                      extract(epoch FROM min(at) FILTER (WHERE type = 'started'))::float8,
                      extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded'))::float8
               FROM procrastinate_events""",
        )[0]
        return int(row[0]), row[1], row[2]

    def latencies(self) -> list[float]:
        rows = query(
            self.db_url,
            """SELECT extract(epoch FROM s.at - d.at)::float8
               FROM procrastinate_events d
               JOIN procrastinate_events s ON s.job_id = d.job_id AND s.type = 'started'
               WHERE d.type = 'deferred' ORDER BY d.job_id""",
        )
        return [r[0] for r in rows]


class Pgqueuer(_AsyncPeer):
    name = "pgqueuer"
    BATCH_SIZE = 10  # pgqueuer's default and the value its own benchmark uses

    def install(self) -> None:
        self._cli("pgqueuer", "--pg-dsn", self.db_url, "install")

    async def open(self) -> None:
        import asyncpg
        from pgqueuer import AsyncpgDriver
        from pgqueuer.queries import Queries

        self.conn = await asyncpg.connect(dsn=self.db_url)
        self.queries = Queries(AsyncpgDriver(self.conn))

    async def shut(self) -> None:
        await self.conn.close()

    def enqueue_each(self, n: int) -> float:
        async def go() -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                await self.queries.enqueue("noop", None)
            return time.perf_counter() - t0

        return float(self.run(go()))

    def enqueue_bulk(self, n: int) -> float:
        async def go() -> float:
            t0 = time.perf_counter()
            await self.queries.enqueue(["noop"] * n, [None] * n, [0] * n)
            return time.perf_counter() - t0

        return float(self.run(go()))

    def worker_argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.peers.pgqueuer_worker", str(self.BATCH_SIZE)]

    def unfinished(self) -> int:
        return int(scalar(self.db_url, "SELECT count(*) FROM pgqueuer"))

    def done_window(self) -> tuple[int, float | None, float | None]:
        row = query(
            self.db_url,
            """SELECT count(*) FILTER (WHERE status = 'successful'),
                      extract(epoch FROM min(created) FILTER (WHERE status = 'picked'))::float8,
                      extract(epoch FROM max(created) FILTER (WHERE status = 'successful'))::float8
               FROM pgqueuer_log""",
        )[0]
        return int(row[0]), row[1], row[2]

    def latencies(self) -> list[float]:
        rows = query(
            self.db_url,
            """SELECT extract(epoch FROM p.created - q.created)::float8
               FROM pgqueuer_log q
               JOIN pgqueuer_log p ON p.job_id = q.job_id AND p.status = 'picked'
               WHERE q.status = 'queued' ORDER BY q.job_id""",
        )
        return [r[0] for r in rows]


SYSTEMS: dict[str, type[System]] = {
    "jobrunner": Jobrunner,
    "procrastinate": Procrastinate,
    "pgqueuer": Pgqueuer,
}
