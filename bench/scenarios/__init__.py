"""One module per scenario; each has `run(ctx, ...) -> Result`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench.common import Server, kill_all, server_started

T = TypeVar("T")


@dataclass
class Context:
    """What every scenario gets from the command line."""

    server: Server
    workdir: Path
    repeats: int = 3
    systems: tuple[str, ...] = ("jobrunner", "procrastinate", "pgqueuer")
    concurrency: int | None = None  # jobrunner [worker] concurrency (None: its default)
    log: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.append(text)

    def dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def guarded(self, label: str, fn: Callable[[], T], attempts: int = 3) -> T:
        """Run one measurement; run it again if it failed or the server restarted meanwhile
        (other people's outage tests restart the shared server)."""
        for attempt in range(1, attempts + 1):
            before = server_started(self.server.url)
            try:
                value = fn()
            except Exception as exc:
                if attempt == attempts:
                    raise
                kill_all()
                self.say(
                    f"  {label}: attempt {attempt} failed ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); again"
                )
                self.retried.append(f"{label}: {type(exc).__name__}")
                continue
            if server_started(self.server.url) == before or attempt == attempts:
                return value
            self.say(f"  {label}: the server restarted during the measurement; again")
            self.retried.append(f"{label}: server restarted")
        raise AssertionError("unreachable")
