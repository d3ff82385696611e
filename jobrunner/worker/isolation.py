"""`isolation = "process"`: sync jobs in reusable child processes that can really be stopped.

Children come from the ``forkserver`` start method: a clean server process (started once, with
this module preloaded) forks them, so the worker's running event loop, threads and database
connections are never forked. Each child runs one call at a time and is reused between runs.

One duplex pipe per child carries everything, in order: the call (the job's ``module:attr``
string, its kwargs, the run's context fields, ``max_memory``), then the child's log records,
then the outcome (``None`` or the error's type, message and traceback). The parent re-emits
each record through structlog in the run's contextvars context, so the line carries run_id,
job, attempt, scheduled_for and correlation_id like a line from a thread.

At a timeout or a cancel the parent sends the child SIGTERM (in the child it raises an
exception, so ``finally`` blocks run), then SIGKILL after ``grace`` seconds (at once when the
run's lease may expire: ``KILL_AT_ONCE``). The call returns
at once and the pool slot is free at once: the next call starts a fresh child. A child that
dies on its own (``os._exit``, a signal) yields a ``ProcessDied`` error and is replaced.

``max_memory`` is RLIMIT_AS (the address space of the whole child, the interpreter included),
set for one call and reset after it; a MemoryError under the limit is reported as
"exceeded max_memory (N bytes)". Return values stay in the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import itertools
import logging
import multiprocessing
import os
import pickle
import pkgutil
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import structlog

from jobrunner.context import KILL_AT_ONCE, JobContext, Result, encode_result, error_info
from jobrunner.logging import get_logger

START_METHOD = "forkserver"
KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL

ErrorInfo = dict[str, str]


@dataclass(frozen=True, kw_only=True)
class Call:
    """What the parent sends a child: everything is picklable."""

    seq: int
    func: str  # "module:attr"
    kwargs: Mapping[str, Any]
    context: Mapping[str, Any] | None  # JobContext fields (no log, no event); None: no ctx
    max_memory: int | None
    import_paths: tuple[str, ...]
    log_level: int


def unpicklable(values: Mapping[str, Any]) -> dict[str, str]:
    """Each key whose value cannot be pickled, with the reason (for `jobrunner check`)."""
    problems = {}
    for key, value in values.items():
        try:
            pickle.dumps(value)
        except Exception as exc:
            problems[key] = f"{type(exc).__name__}: {exc}"
    return problems


# --------------------------------------------------------------------------- parent side


@dataclass(eq=False)
class _Child:
    process: BaseProcess
    conn: Connection
    reaped: bool = False


class ProcessPool:
    """At most `size` children, each running one call at a time."""

    def __init__(
        self,
        size: int,
        *,
        import_paths: Sequence[str | Path] = (),
        grace: float = KILL_GRACE,
        start_method: str = START_METHOD,
    ) -> None:
        self.size = size
        self.grace = grace
        self._mp: Any = multiprocessing.get_context(start_method)  # typeshed: no .Process
        if start_method == "forkserver":
            self._mp.set_forkserver_preload([__name__])
        self._import_paths = tuple(str(p) for p in import_paths)
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        # multiprocessing polls every child's sentinel when it starts a process: starting
        # and joining are serialised so that no exit status is read twice.
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(2 * size + 2, thread_name_prefix="jobrunner-proc")
        self._seq = itertools.count(1)
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """The pids of the children not yet reaped (for tests and diagnostics)."""
        with self._lock:
            return [c.process.pid for c in self._children if c.process.pid is not None]

    async def run(
        self,
        func: str,
        kwargs: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
        max_memory: int | None = None,
    ) -> Result:
        """Call `func(**kwargs)` in a child; how it ended (a return value as JSON text).

        When the awaiting task is cancelled (a timeout, a cancel request, shutdown) the child
        is killed and the CancelledError propagates at once.
        """
        if self._closed:
            raise RuntimeError("the process pool is shut down")
        call = Call(
            seq=next(self._seq),
            func=func,
            kwargs=dict(kwargs),
            context=context,
            max_memory=max_memory,
            import_paths=self._import_paths,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        loop = asyncio.get_running_loop()
        async with self._slots:
            child = await self._checkout(loop)
            ctx = contextvars.copy_context()  # the run's log context, for the child's logs
            talk = self._threads.submit(ctx.run, self._converse, child, call)
            try:
                ended, alive = await asyncio.wrap_future(talk)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError) and KILL_AT_ONCE in exc.args:
                    self._signal(child, signal.SIGKILL)
                else:
                    self._stop(child)
                talk.add_done_callback(lambda _: self._retire(child))
                raise
            if alive:
                self._idle.append(child)
            return ended

    async def _checkout(self, loop: asyncio.AbstractEventLoop) -> _Child:
        while self._idle:
            idle = self._idle.pop()
            if not wait([idle.process.sentinel], 0):
                return idle
            self._threads.submit(self._retire, idle)  # died while idle
        started = loop.run_in_executor(self._threads, self._start)
        try:
            return await asyncio.shield(started)
        except asyncio.CancelledError:
            started.add_done_callback(self._adopt)
            raise

    async def warm(self) -> None:
        """Start the fork server and one idle child now, so that the first run does not pay
        for them (about a second: the child imports jobrunner) out of its timeout."""
        loop = asyncio.get_running_loop()
        self._idle.append(await loop.run_in_executor(self._threads, self._start))

    def _adopt(self, started: asyncio.Future[_Child]) -> None:
        if not started.cancelled() and started.exception() is None:
            self._idle.append(started.result())

    def _start(self) -> _Child:
        ours, theirs = self._mp.Pipe()
        process = self._mp.Process(target=_child_main, args=(theirs,), name="jobrunner-job")
        with self._lock:
            process.start()
            child = _Child(process, ours)
            self._children.add(child)
        theirs.close()
        if self._closed:
            self._signal(child, signal.SIGKILL)
        return child

    def _converse(self, child: _Child, call: Call) -> tuple[Result, bool]:
        """Send the call, re-emit the child's logs, return (how it ended, child still usable).

        While it runs, this thread is the only reader of the child's connection."""
        try:
            data = ForkingPickler.dumps(call)
        except Exception as exc:  # nothing was sent: the child is still idle
            return _failed(_error(exc, "the arguments cannot be pickled: ")), True
        try:
            child.conn.send_bytes(data)
            while True:
                kind, seq, payload = child.conn.recv()
                if kind == "log":
                    _emit(payload, current=seq == call.seq)
                else:  # "done": one per call, and a child has one call at a time
                    return _ended(payload), True
        except (EOFError, OSError):
            error = _died(self._reap(child, 5.0), call.max_memory)
        except Exception as exc:  # a garbled message: the child cannot be trusted any more
            self._signal(child, signal.SIGKILL)
            error = _error(exc, "lost contact with the worker process: ")
        self._retire(child)
        return _failed(error), False

    def _signal(self, child: _Child, sig: int) -> None:
        with self._lock:
            if child.reaped or wait([child.process.sentinel], 0):
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.process.pid or 0, sig)

    def _stop(self, child: _Child) -> None:
        """SIGTERM now, SIGKILL after the grace (from a timer thread, so that it does not
        depend on the event loop living on)."""
        self._signal(child, signal.SIGTERM)
        timer = threading.Timer(self.grace, self._signal, (child, signal.SIGKILL))
        timer.daemon = True
        timer.start()

    def _reap(self, child: _Child, timeout: float | None) -> int | None:
        """Wait for the child's exit (SIGKILL after `timeout`), forget it, return its code."""
        if not wait([child.process.sentinel], timeout):
            self._signal(child, signal.SIGKILL)
        with self._lock:
            if not child.reaped:
                child.process.join()
                child.reaped = True
                self._children.discard(child)
            return child.process.exitcode

    def _retire(self, child: _Child) -> None:
        """Reap a child nobody talks to any more and close its connection."""
        self._reap(child, None)
        child.conn.close()

    def shutdown(self) -> None:
        """Stop every child: SIGTERM, SIGKILL after the grace. Blocks at most about `grace`."""
        self._closed = True
        with self._lock:
            children = list(self._children)
        for child in children:
            self._signal(child, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for child in children:
            self._reap(child, max(deadline - time.monotonic(), 0))
        for child in self._idle:  # busy ones: their conversation thread closes them
            child.conn.close()
        self._idle.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)


def _error(exc: BaseException, prefix: str = "") -> ErrorInfo:
    info = error_info(exc)
    info["message"] = prefix + info["message"]
    return info


def _died(code: int | None, max_memory: int | None) -> ErrorInfo:
    if code is not None and code < 0:
        try:
            how = f"signal {-code}, {signal.Signals(-code).name}"
        except ValueError:
            how = f"signal {-code}"
    else:
        how = f"exit code {code}"
    limit = f"; max_memory was {max_memory} bytes" if max_memory else ""
    return {
        "type": "ProcessDied",
        "message": f"worker process died ({how}){limit}",
        "traceback": "",
    }


_LEVELS = (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)


def _emit(record: Mapping[str, Any], *, current: bool) -> None:
    """Re-emit a child's log record here; a record from an earlier call gets no run context."""
    level = next((lv for lv in _LEVELS if record["level"] >= lv), logging.DEBUG)
    logger = get_logger(record["logger"])
    context = contextvars.copy_context() if current else contextvars.Context()
    try:
        context.run(logger.log, level, record["event"], **record["fields"])
    except Exception:  # a record that cannot be rendered must not end the conversation
        logging.getLogger(__name__).exception("cannot re-emit a log record of a job process")


# --------------------------------------------------------------------------- child side


class _Terminated(BaseException):
    """Raised in a child by SIGTERM: the parent gave up on the call."""


@dataclass
class _ChildState:
    conn: Connection
    seq: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, kind: str, payload: Any) -> None:
        with self.lock:
            self.conn.send((kind, self.seq, payload))

    def on_sigterm(self, signum: int, frame: Any) -> None:
        self.cancelled.set()
        raise _Terminated


def _child_main(conn: Connection) -> None:
    """A child's loop: receive a call, run it, send the outcome; until EOF or SIGTERM."""
    _die_with_parent()
    state = _ChildState(conn)
    _reset_child(state)
    with contextlib.suppress(EOFError, OSError, _Terminated):
        while True:
            data = conn.recv_bytes()
            try:
                call: Call = pickle.loads(data)
            except Exception as exc:
                state.send("done", (_error(exc, "the arguments cannot be unpickled: "), None))
                continue
            state.seq, state.cancelled = call.seq, threading.Event()
            ended = _run(call, state)
            _reset_child(state)
            state.send("done", ended)
            state.seq = 0


def _die_with_parent() -> None:
    """Linux: SIGKILL this child when its parent (the fork server) exits, so that a SIGKILLed
    worker leaves no job running.

    The fork server exits when every holder of its "alive" pipe is gone. multiprocessing
    gives each child the pipe's write end, which would keep the server, and so this child,
    alive after the worker died: the child lets go of it (a job that uses the forkserver
    itself starts a server of its own).
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    server = forkserver._forkserver
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None  # type: ignore[attr-defined]


def _reset_child(state: _ChildState) -> None:
    """Undo what a job may have changed that the child relies on: its signal handlers and
    where logs go (children are reused)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group
    signal.signal(signal.SIGTERM, state.on_sigterm)
    _configure_child_logging(state)
    structlog.contextvars.clear_contextvars()


def _run(
    call: Call, state: _ChildState
) -> tuple[ErrorInfo | None, tuple[str | None, str | None] | None]:
    """Run the call: (its error, None), or (None, its return value as `encode_result`)."""
    for path in reversed(call.import_paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    logging.getLogger().setLevel(call.log_level)
    try:
        fn = pkgutil.resolve_name(call.func)
        kwargs = dict(call.kwargs)
        if call.context is not None:
            log = structlog.stdlib.get_logger("jobrunner.worker")
            kwargs["ctx"] = JobContext(**call.context, log=log, cancelled=state.cancelled)
        with _memory_limit(call.max_memory):
            value = fn(**kwargs)
        return None, encode_result(value)  # JSON here: the value need not pickle
    except _Terminated:
        raise
    except MemoryError as exc:
        info = _error(exc)
        if call.max_memory is not None:
            info["message"] = f"exceeded max_memory ({call.max_memory} bytes)"
        return info, None
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from a job fail the run
        return _error(exc), None


def _ended(payload: Any) -> Result:
    """A child's "done" payload as a Result."""
    error, value = payload
    if error is not None:
        return _failed(error)
    encoded, note = value
    return Result(status="succeeded", encoded=encoded, note=note)


def _failed(error: ErrorInfo) -> Result:
    return Result(status="failed", error=error)


@contextlib.contextmanager
def _memory_limit(limit: int | None) -> Iterator[None]:
    if limit is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    capped = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (capped, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# Attributes every LogRecord has; the others are `extra` fields.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# Keys the parent sets itself when it re-emits a record.
_RESERVED = ("event", "level", "logger", "timestamp", "exc_info", "_logger", "_name")


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else repr(value)


class _PipeHandler(logging.Handler):
    """Sends each record (stdlib or structlog) to the parent as a plain dict."""

    def __init__(self, state: _ChildState) -> None:
        super().__init__()
        self.state = state

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if isinstance(record.msg, dict):  # structlog, through wrap_for_formatter
                fields = dict(record.msg)
                event = fields.pop("event", "")
            else:
                fields = {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}
                event = record.getMessage()
                if record.exc_info:
                    fields["exception"] = "".join(traceback.format_exception(*record.exc_info))
            for key in _RESERVED:
                fields.pop(key, None)
            payload = {
                "logger": record.name,
                "level": record.levelno,
                "event": str(event),
                "fields": {str(k): _plain(v) for k, v in fields.items()},
            }
            self.state.send("log", payload)
        except _Terminated:
            raise
        except Exception:
            self.handleError(record)


def _configure_child_logging(state: _ChildState) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers[:] = [_PipeHandler(state)]
