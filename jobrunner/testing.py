"""Helpers for testing your own jobs (see docs/testing.md).

- `run_job(config_path, name, **kwargs)` runs one job of your configuration inline, in this
  process, with a real `JobContext`: its kwargs are the job's own (from the TOML) with yours
  merged over them, checked against its parameters as a client's enqueue would be. It returns
  the job's return value or raises its exception. `arun_job` is the same for a test that
  already runs an event loop (an async job is awaited there).
- `JobrunnerWorker`: a real `jobrunner run` process on your configuration and a temporary
  SQLite database, with a `client` to enqueue and `wait_for(run_id)`; the pytest plugin
  (`jobrunner.pytest_plugin`, loaded by pytest's entry point) gives one per test as the
  `jobrunner_worker` fixture and removes its files when the test ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog

from jobrunner.client import Client
from jobrunner.config import ENV_DATABASE_URL, JobConfig, load_config
from jobrunner.context import JobContext
from jobrunner.records import Run
from jobrunner.signature import check_kwargs, parameters_of

__all__ = ["JobrunnerWorker", "arun_job", "run_job"]


def _prepared(
    config_path: str | Path, name: str, kwargs: dict[str, Any]
) -> tuple[JobConfig, dict[str, Any]]:
    config = load_config(config_path)
    try:
        job = config.job(name)
    except KeyError:
        names = ", ".join(j.name for j in config.jobs) or "none"
        raise LookupError(f"{config_path}: no job named {name!r}; its jobs: {names}") from None
    assert job.fn is not None  # loaded with its function imported
    merged = json.loads(json.dumps({**job.kwargs, **kwargs}))  # as stored on a run: JSON
    check_kwargs(name, parameters_of(job.fn), merged)
    if job.accepts_ctx:
        merged["ctx"] = JobContext(
            run_id=0,
            job_name=name,
            scheduled_for=None,
            attempt=1,
            worker_id="test",
            fence=0,
            correlation_id=None,
            log=structlog.get_logger("jobrunner.job").bind(job=name, run_id=0),
        )
    return job, merged


def run_job(config_path: str | Path, name: str, **kwargs: Any) -> Any:
    """Run job `name` of the configuration inline; its return value, or its exception."""
    job, merged = _prepared(config_path, name, kwargs)
    assert job.fn is not None
    if job.is_async:
        return asyncio.run(job.fn(**merged))
    return job.fn(**merged)


async def arun_job(config_path: str | Path, name: str, **kwargs: Any) -> Any:
    """As `run_job`, awaited on the running event loop (a sync job runs in a thread)."""
    job, merged = _prepared(config_path, name, kwargs)
    assert job.fn is not None
    if job.is_async:
        return await job.fn(**merged)
    return await asyncio.to_thread(job.fn, **merged)


class JobrunnerWorker:
    """A `jobrunner run` process on `config_path` with its own temporary SQLite database
    (the file's `[database] url` is not used). Use as a context manager, or call `stop()`."""

    def __init__(self, config_path: str | Path, *, start_timeout: float = 30.0) -> None:
        self.config_path = Path(config_path).absolute()
        self._dir = Path(tempfile.mkdtemp(prefix="jobrunner-test-"))
        self.url = f"sqlite:///{self._dir / 'jobrunner.db'}"
        self._log = (self._dir / "worker.log").open("wb")
        env = {**os.environ, ENV_DATABASE_URL: self.url}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobrunner", "run", "-c", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.client = Client.from_url(self.url)
        try:
            self._wait_started(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited {self.process.returncode}:\n{self.log()}")
            try:
                if self.client.list_jobs():
                    return
            except Exception:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"the worker did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        """What the worker wrote so far."""
        self._log.flush()
        return (self._dir / "worker.log").read_text(errors="replace")

    def enqueue(self, name: str, kwargs: dict[str, Any] | None = None, **options: Any) -> Run:
        """`Client.enqueue` on the worker's database."""
        return self.client.enqueue(name, kwargs, **options)

    def wait_for(self, run_id: int, timeout: float = 30.0) -> Run:
        """The run's final attempt once it ended (`Client.wait`)."""
        return self.client.wait(run_id, timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the worker, wait for it, and remove its files; its exit code."""
        code = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        else:
            code = self.process.returncode
        self.client.close()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        return code

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
