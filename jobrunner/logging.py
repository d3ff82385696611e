"""Structured logs: one event per line, JSON or console, with the run's context bound.

Every event inside a run carries worker_id, job, run_id, attempt and scheduled_for (bound with
structlog's contextvars, which follow the run into its thread). Stdlib `logging` calls from jobs
and libraries go through the same renderer. Passwords in database URLs are masked everywhere.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import sys
import time
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
        # `://` or `=` first: two scans in C that most values fail, before the patterns.
        if value.__class__ is str and ("://" in value or "=" in value):
            event[key] = mask_secrets(value)
    return event


# The processors below do what structlog's merge_contextvars, TimeStamper(fmt="iso",
# utc=True) and JSONRenderer do, with less work per line: the worker writes a line per run,
# and those three took 13.5 of the 22.6 us such a line cost (7.4 of them in json.dumps,
# which builds an encoder on every call when given `default`).

_PREFIX = structlog.contextvars.STRUCTLOG_KEY_PREFIX


def _merge_contextvars(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The context bound with `structlog.contextvars.bind_contextvars`; the event's own keys
    win."""
    for var, value in contextvars.copy_context().items():
        name = var.name
        if name.startswith(_PREFIX) and value is not Ellipsis:
            event.setdefault(name[len(_PREFIX) :], value)
    return event


_second: tuple[int, str] = (0, "")


def _timestamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`timestamp`: UTC, ISO 8601 with microseconds (`2026-11-25T19:27:43.156828Z`); the
    date and time of day formatted once a second."""
    global _second
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    if _second[0] != seconds:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    event["timestamp"] = f"{_second[1]}.{nanos // 1000:06d}Z"
    return event


def _shared_processors() -> list[Any]:
    return [
        _merge_contextvars,
        structlog.processors.add_log_level,
        _timestamp,
        structlog.processors.format_exc_info,
        _mask_processor,
    ]


def _json_default(value: Any) -> Any:
    """What JSON cannot hold: the object's `__structlog__()` if it has one, else its repr."""
    to_log = getattr(value, "__structlog__", None)
    return to_log() if callable(to_log) else repr(value)


def _json_dumps(event: Any, **_: Any) -> str:
    """`json.dumps(event, default=_json_default)`, with the encoder built once."""
    if _ENCODE is None:  # no C accelerator
        return json.dumps(event, default=_json_default)
    return "".join(_ENCODE(event, 0))


_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # not in typeshed
_ENCODE = (
    None
    if _make_encoder is None
    else _make_encoder(
        None,  # no circular-reference bookkeeping (a cycle raises RecursionError)
        _json_default,
        json.encoder.encode_basestring_ascii,
        None,  # indent
        ": ",
        ", ",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )
)


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
        structlog.processors.JSONRenderer(serializer=_json_dumps)
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
