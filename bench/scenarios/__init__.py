"""One module per scenario; each has `run(ctx, ...) -> Result`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Server


@dataclass
class Context:
    """What every scenario gets from the command line."""

    server: Server
    workdir: Path
    repeats: int = 3
    systems: tuple[str, ...] = ("jobrunner", "procrastinate", "pgqueuer")
    concurrency: int | None = None  # jobrunner [worker] concurrency (None: its default)
    log: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.append(text)

    def dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
