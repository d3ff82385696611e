"""`jobrunner run`: load the config and run a worker until signalled.

Kept apart from the CLI so that a replica does not load what only the management commands
need: typer (0.29 coerces every parameter through pydantic) and rich tables, about 10 MB of
resident memory per replica. `jobrunner.__main__` sends `run [-c FILE]` here directly.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from pathlib import Path

import sqlalchemy as sa

import jobrunner.tracing as tracing
from jobrunner.config import load_config, mask_url, resolve_config_path
from jobrunner.errors import (
    BadInput,
    ConfigError,
    JobNotFound,
    JobrunnerError,
    RunNotFound,
    ScheduleNotFound,
)


def run_args(args: list[str]) -> tuple[bool, Path | None]:
    """`run [-c FILE | --config FILE | --config=FILE]`: (matched, FILE). Anything else
    (`--help`, a typo) is left to the CLI, which explains it."""
    if args[:1] != ["run"]:
        return False, None
    rest = args[1:]
    if not rest:
        return True, None
    if len(rest) == 2 and rest[0] in ("-c", "--config") and not rest[1].startswith("-"):
        return True, Path(rest[1])
    if len(rest) == 1 and rest[0].startswith("--config=") and len(rest[0]) > len("--config="):
        return True, Path(rest[0].removeprefix("--config="))
    return False, None


def failure(exc: BaseException, url: str) -> tuple[str, int] | None:
    """The one-line message and exit code a command ends with after `exc`, or None for an
    error that is a bug (it keeps its traceback). Database URLs are masked."""
    if isinstance(exc, JobNotFound | RunNotFound | ScheduleNotFound | BadInput):
        return str(exc), 2
    if isinstance(exc, JobrunnerError):
        return str(exc), 1
    if isinstance(exc, sa.exc.DBAPIError):
        first = str(exc.orig or exc).strip().splitlines()[0]
        return f"database {mask_url(url)}: {first}", 1
    return None


GC_THRESHOLD = (10_000, 10, 10)  # the first generation is collected every 10,000 allocations
SWITCH_INTERVAL = 0.0005  # seconds a busy thread keeps the GIL while another waits (5 ms)


def _tune_interpreter() -> None:
    """The interpreter's settings for a long-running worker, measured in drains of 20,000
    and 30,000 runs:

    - Garbage collection: what start-up loaded (modules, job functions, the engine) lives
      as long as the process, so it is frozen out of the collector's passes, and the
      youngest generation is collected less often (the default, every 700 allocations, is
      a collection every few runs). Collections took 80-300 ms of the worker's 1.7 s of
      CPU, 5-40 ms after.
    - Thread switches: the store's calls block in a small thread pool while the event loop
      runs jobs. When a reply arrives, its thread waits for the loop to hand over the GIL,
      by default for up to 5 ms, and a claim is about six statements in turn. At 0.5 ms
      the drain rate rose by about 12% (median of 5 pairs, 7,142 -> 8,012 runs/s).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    sys.setswitchinterval(SWITCH_INTERVAL)


def run_worker(config: Path | None) -> int:
    """Run a worker with the config at `config` (see `resolve_config_path`). Exits the
    process when the worker stops; returns an exit code only when it cannot start."""
    try:
        cfg = load_config(resolve_config_path(config))
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return 2
    from jobrunner.logging import configure_logging
    from jobrunner.store.access import WorkerStore
    from jobrunner.worker.supervisor import Worker

    configure_logging(cfg.logging.format, cfg.logging.level)
    store = WorkerStore.from_url(cfg.database.url)
    store.notify = cfg.notify
    store.expect_success = {
        j.name: j.expect_success_within.total_seconds()
        for j in cfg.jobs
        if j.expect_success_within is not None
    }
    _tune_interpreter()
    try:
        code = asyncio.run(Worker(cfg, store).run())
    except Exception as exc:
        known = failure(exc, cfg.database.url)
        if known is None:
            raise
        print(f"error: {known[0]}", file=sys.stderr)
        return known[1]
    finally:
        store.close()
    # Everything is recorded and released. A sync job that ignores ctx.cancelled would keep
    # its (unkillable) thread and so the process alive: exit now instead of joining it.
    tracing.flush()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
