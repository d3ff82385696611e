"""Job functions for the `isolation = "process"` tests. They run in child processes.

Each appends one JSON line per event to the file `out` (O_APPEND, so concurrent children do
not interleave): the event, the pid of the child and the run's context when there is one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from typing import Any

logger = logging.getLogger("isojobs")


def record(out: str, event: str, ctx: Any = None, **extra: Any) -> None:
    line: dict[str, Any] = {"event": event, "pid": os.getpid(), "t": time.time(), **extra}
    if ctx is not None:
        line.update(
            run_id=ctx.run_id,
            job=ctx.job_name,
            attempt=ctx.attempt,
            slot=ctx.scheduled_for.isoformat() if ctx.scheduled_for else None,
            worker=ctx.worker_id,
            fence=ctx.fence,
            correlation_id=ctx.correlation_id,
        )
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def read(out: str) -> list[dict[str, Any]]:
    try:
        with open(out) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def quick(ctx: Any, out: str) -> str:
    record(out, "start", ctx)
    return "done"


def hold(ctx: Any, out: str, seconds: float = 0.3) -> None:
    record(out, "start", ctx)
    time.sleep(seconds)
    record(out, "end", ctx)


def no_ctx(out: str, value: int = 0) -> None:
    record(out, "start", value=value, path=sys.path[:3])


def sleep_forever(ctx: Any, out: str) -> None:
    record(out, "start", ctx)
    try:
        time.sleep(3600)
    finally:
        record(out, "cleanup", ctx)  # SIGTERM raises in the child: finally blocks run


def spin(ctx: Any, out: str) -> None:
    record(out, "start", ctx)
    n = 0
    while True:
        n += 1


def ignore_sigterm(ctx: Any, out: str) -> None:
    """Only SIGKILL stops this one."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    record(out, "start", ctx)
    while True:
        time.sleep(0.01)


def hog(ctx: Any, out: str, mb: int = 1024) -> None:
    record(out, "start", ctx)
    block = bytearray(mb * 1024 * 1024)
    record(out, "allocated", ctx, size=len(block))


def exit_now(ctx: Any, out: str, code: int = 3) -> None:
    record(out, "start", ctx)
    os._exit(code)


def segfault(ctx: Any, out: str) -> None:
    record(out, "start", ctx)
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(5)


def fail(ctx: Any, out: str, message: str = "boom") -> None:
    record(out, "start", ctx)
    raise ValueError(message)


def chatty(ctx: Any, out: str) -> None:
    record(out, "start", ctx)
    logger.info("hello from the child", extra={"answer": 42})
    ctx.log.warning("ctx log from the child", size=3)
    try:
        raise KeyError("inner")
    except KeyError:
        logger.exception("child caught an error")
    logger.debug("not shown at info level")


def sys_exit(ctx: Any, out: str) -> None:
    record(out, "start", ctx)
    sys.exit(4)


async def not_sync(ctx: Any) -> None:
    return None
