"""What a run is and how it ended, shared by the worker and the job processes (pure: no I/O).

- `JobContext`: what a job that declares a `ctx` parameter receives; `Cancelled` is its
  `ctx.cancelled` flag.
- `Result`: how one call of a job function ended; `error_info` is the error part of it,
  `encode_result` the JSON of its return value (or why it is not kept).

Kept below both `jobrunner.worker.executor` (which calls jobs in this process) and
`jobrunner.worker.isolation` (which calls them in child processes and rebuilds the context
there), so that neither imports the other for these types.
"""

from __future__ import annotations

import json
import threading
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import jobrunner.converters as conv

__all__ = [
    "KILL_AT_ONCE",
    "Cancelled",
    "JobContext",
    "Result",
    "Status",
    "encode_result",
    "error_info",
]

Status = Literal["succeeded", "failed", "timed_out"]
KILL_AT_ONCE = "kill at once"
"""The message of a run's cancellation that must not wait for a child process's SIGTERM grace
(its lease may expire soon: guarantee 10): the child gets SIGKILL at once."""


class Cancelled:
    """`ctx.cancelled`: set when the run must stop; `is_set()`, `set()` and `wait(timeout)`
    as on `threading.Event`. The Event behind `wait` is made on first use, so the many
    runs that never wait do not pay for one."""

    __slots__ = ("_event", "_flag")
    _lock = threading.Lock()

    def __init__(self) -> None:
        self._flag = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._lock:
            self._flag = True
            if self._event is not None:
                self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._event is None:
                self._event = threading.Event()
                if self._flag:
                    self._event.set()
        return self._event.wait(timeout)


@dataclass(frozen=True, kw_only=True)
class JobContext:
    """What a job that declares a `ctx` parameter receives."""

    run_id: int
    job_name: str
    scheduled_for: datetime | None
    attempt: int
    worker_id: str
    fence: int
    correlation_id: str | None
    log: Any
    cancelled: Cancelled | threading.Event = field(default_factory=Cancelled)


@dataclass(frozen=True, kw_only=True)
class Result:
    status: Status
    error: dict[str, str] | None = None
    value: Any = None  # the return value (of a call in this process)
    encoded: str | None = None  # its JSON text (from a child process), if it has one
    note: str | None = None  # why a child's return value was not kept


def encode_result(value: Any, limit: int | None = None) -> tuple[str | None, str | None]:
    """A job's return value as JSON text, and a note when it is not kept: not JSON, or
    longer than `limit` bytes. None (no value) is neither."""
    if value is None:
        return None, None
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        kind = type(value).__qualname__
        return None, f"result not kept: a {kind} is not JSON ({str(exc)[:120]})"
    if conv.nested_deeper(text, value):
        return None, f"result not kept: nested more than {conv.MAX_JSON_DEPTH} levels deep"
    note = oversize(text, limit)
    return (None, note) if note else (text, None)


def oversize(text: str, limit: int | None) -> str | None:
    """The note on a result's JSON text longer than `limit` bytes; None if it fits."""
    size = len(text.encode())
    if limit is None or size <= limit:
        return None
    return (
        f"result not kept: {size:,} bytes of JSON, over [worker] max_result_size ({limit:,} bytes)"
    )


def error_info(exc: BaseException) -> dict[str, str]:
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return {
        "type": name,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
