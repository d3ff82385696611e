"""Helpers for tests that run real `jobrunner` processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from jobrunner.records import Renewal
from jobrunner.store import leases
from jobrunner.store.access import AdminStore, WorkerStore, write

ROOT = Path(__file__).resolve().parent.parent
SYSJOBS_DIR = Path(__file__).resolve().parent / "system"


def jobrunner_cmd() -> list[str]:
    """The installed `jobrunner` console script (next to this Python), else `python -m`."""
    script = Path(sys.executable).with_name("jobrunner")
    if script.exists():
        return [str(script)]
    found = shutil.which("jobrunner")
    return [found] if found else [sys.executable, "-m", "jobrunner"]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def write_config(
    path: Path,
    db_url: str,
    jobs: list[Mapping[str, Any]],
    *,
    worker: Mapping[str, Any] | None = None,
    database: Mapping[str, Any] | None = None,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write a config whose jobs import from tests/system/sysjobs.py."""
    settings = {
        "lease_ttl": "4s",
        "heartbeat": "1s",
        "shutdown_grace": "5s",
        "poll_interval": "0.2s",
        "import_paths": [str(SYSJOBS_DIR)],
        **(worker or {}),
    }
    lines = ["[database]", f"url = {toml_value(db_url)}"]
    listen = listen_url(db_url)
    if listen != db_url:
        lines.append(f"listen_url = {toml_value(listen)}")
    lines += [f"{k} = {toml_value(v)}" for k, v in (database or {}).items()]
    lines += ["", "[worker]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    lines += ["", "[logging]", 'format = "json"', 'level = "info"']
    for name, values in (sections or {}).items():
        lines += ["", f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in values.items())]
    for job in jobs:
        lines += ["", "[[jobs]]", *(f"{k} = {toml_value(v)}" for k, v in job.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def listen_url(url: str) -> str:
    """Through PgBouncer (marked by `prepared_statements=false`), LISTEN needs a direct
    connection: the same database on the server's own port."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    if parsed.query.get("prepared_statements") != "false":
        return url
    server = sa.make_url(os.environ.get("JOBRUNNER_TEST_DATABASE_URL", "postgresql://h:5432/x"))
    direct = parsed.set(port=server.port or 5432).difference_update_query(["prepared_statements"])
    return direct.render_as_string(hide_password=False)


class WorkerProcess:
    """A real `jobrunner run` process with its log in a file."""

    def __init__(
        self,
        config: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        *,
        prefix: Sequence[str] = (),
        stdout_path: Path | None = None,
    ):
        """`prefix`: a command that runs `jobrunner run` (opentelemetry-instrument);
        `stdout_path`: stdout to its own file (else with stderr in `log_path`)."""
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in wait()/kill()
        self._out = None if stdout_path is None else open(stdout_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*prefix, *jobrunner_cmd(), "run", "-c", str(config)],
            stdout=self._out or self._log,
            stderr=self._log,
            env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def find(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    def wait_started(self, timeout: float = 20) -> None:
        wait_for(lambda: bool(self.find("worker started")) or self.proc.poll() is not None, timeout)
        if self.proc.poll() is not None:
            raise AssertionError(
                f"worker exited {self.proc.returncode}: {self.log_path.read_text()}"
            )

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()
            if self._out is not None:
                self._out.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.wait()


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Workers:
    """Start worker processes for a test and always clean them up."""

    def __init__(self, tmp_path: Path, env: Mapping[str, str]):
        self.tmp_path = tmp_path
        self.env = dict(env)
        self.all: list[WorkerProcess] = []

    def start(
        self,
        config: Path,
        *,
        wait: bool = True,
        env_extra: Mapping[str, str] | None = None,
        **options: Any,
    ) -> WorkerProcess:
        n = len(self.all)
        env = {**self.env, **(env_extra or {})}
        proc = WorkerProcess(config, self.tmp_path / f"worker{n}.log", env, **options)
        self.all.append(proc)
        if wait:
            proc.wait_started()
        return proc

    def close(self) -> None:
        for p in self.all:
            p.kill()

    def __iter__(self) -> Iterator[WorkerProcess]:
        return iter(self.all)


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60) -> Any:
    return subprocess.run(
        [*jobrunner_cmd(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


class AllPorts(WorkerStore, AdminStore):
    """Every port of one database in one handle: a test drives a worker's calls and an
    admin's or client's on the same rows, through the real implementations."""

    def renew(self, worker_id: str, lease_ttl: float) -> Renewal:
        """A heartbeat's renewal alone."""
        return write(self.engine, leases.renew(worker_id, lease_ttl))
