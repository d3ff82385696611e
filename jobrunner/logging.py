"""Structured logs: one event per line, JSON or console, with the run's context bound.

Every event inside a run carries worker_id, job, run_id, attempt and scheduled_for (bound with
structlog's contextvars, which follow the run into its thread). Stdlib `logging` calls from jobs
and libraries go through the same renderer. Passwords in database URLs are masked everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, BinaryIO, TextIO

import structlog

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
_PARAM_PASSWORD = re.compile(r"(?P<head>password=)[^&\s]+", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """Mask the password of every URL (`scheme://user:***@host`) and `password=` parameter."""
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    return _PARAM_PASSWORD.sub(r"\g<head>***", text)


def _mask_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and ("://" in value or "password=" in value.lower()):
            event[key] = mask_secrets(value)
    return event


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _mask_processor,
    ]


def configure_logging(
    format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging through one renderer on `stream` (stderr).

    jobrunner's own events take structlog's direct path (a filtering logger that drops
    disabled levels at the call, rendered and written in one step): the worker logs a line
    per run, so this path is kept short. Stdlib records (jobs, libraries) go through a
    logging handler that renders them with the same processors and adds `logger`.
    """
    stream = stream or sys.stderr
    if format == "auto":
        format = "console" if stream.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if format == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    level_no = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[structlog.stdlib.add_logger_name, *_shared_processors(), renderer],
        logger_factory=lambda *args: _NamedWriter(stream, args[0] if args else "jobrunner"),
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        cache_logger_on_first_use=False,  # tests reconfigure; the worker binds its own
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.ExtraAdder(),
            structlog.stdlib.add_logger_name,
            *_shared_processors(),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_no)
    for noisy in ("sqlalchemy", "alembic", "psycopg"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class _NamedWriter(structlog.WriteLogger):
    """Writes rendered lines to the stream; has a `name` for `add_logger_name`.

    On a thread that runs an event loop (the worker's), lines go to the stream's byte buffer
    and are flushed once the loop's current callbacks are done: a worker under load
    finishes many runs per loop iteration, and a write system call per line cost about 7%
    of its CPU in a drain (the stream, stderr, is line-buffered). Lines from other threads,
    and streams without a byte buffer, are written and flushed at once, as before. Stdlib
    records go through the same byte buffer, so the order of lines is kept, provided the
    text layer holds no partial text (stderr is line-buffered)."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name
        self._bytes: BinaryIO | None = getattr(file, "buffer", None)
        self._encoding = getattr(file, "encoding", None) or "utf-8"
        self._flush_due = False

    def msg(self, message: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or self._bytes is None:
            super().msg(message)
            return
        self._bytes.write((message + "\n").encode(self._encoding, "backslashreplace"))
        if not self._flush_due:
            self._flush_due = True
            loop.call_soon(self._flush_bytes)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def _flush_bytes(self) -> None:
        self._flush_due = False
        assert self._bytes is not None
        self._bytes.flush()


def get_logger(name: str = "jobrunner") -> Any:
    """A structlog logger whose events carry `logger=name` (resolved when first used, so
    loggers made at import time follow `configure_logging`)."""
    return structlog.get_logger(name)
