"""`isolation = "process"`: the executor's process pool, driven directly with real children.

Children are real processes from the forkserver; job functions live in tests/system/isojobs.py
and report what they saw by appending JSON lines to a file.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog

from jobrunner.context import KILL_AT_ONCE, JobContext, Result
from jobrunner.logging import configure_logging
from jobrunner.worker.executor import Executor
from jobrunner.worker.isolation import ProcessPool, unpicklable
from tests.system import isojobs

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return not alive(pid)


def make_ctx(run_id: int = 1) -> JobContext:
    return JobContext(
        run_id=run_id,
        job_name="iso",
        scheduled_for=datetime(2030, 1, 2, 3, 4, tzinfo=UTC),
        attempt=2,
        worker_id="w-1",
        fence=7,
        correlation_id="req-42",
        log=structlog.get_logger(),
    )


class Harness:
    """An Executor with a process pool; `call` runs one job of isojobs in a child."""

    def __init__(self, out: Path, processes: int = 2) -> None:
        self.out = str(out)
        self.executor = Executor(1, processes=processes, import_paths=[ROOT])

    async def call(
        self,
        name: str,
        *,
        limit: float | None = None,
        max_memory: int | None = None,
        ctx: JobContext | None = None,
        **kwargs: Any,
    ) -> Result:
        ctx = ctx or make_ctx()
        return await self.executor.call(
            print,  # not called: the child imports `func`
            is_async=False,
            kwargs={"ctx": ctx, "out": self.out, **kwargs},
            ctx=ctx,
            time_limit=limit,
            isolation="process",
            func=f"tests.system.isojobs:{name}",
            max_memory=max_memory,
        )

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        return [r for r in isojobs.read(self.out) if event is None or r["event"] == event]

    async def started(self, count: int = 1) -> list[dict[str, Any]]:
        """Wait (at most 10 s) until `count` calls have started."""
        async with asyncio.timeout(10):
            while len(self.records("start")) < count:  # noqa: ASYNC110 - a file, not an event
                await asyncio.sleep(0.01)
        return self.records("start")


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "out.jsonl")
    yield h
    h.executor.shutdown()


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


# --------------------------------------------------------------------------- calls


def test_calls_run_in_a_reused_child_with_kwargs_and_context(harness: Harness) -> None:
    async def go() -> list[Result]:
        return [await harness.call("quick"), await harness.call("quick")]

    assert [r.status for r in run(go())] == ["succeeded", "succeeded"]
    first, second = harness.records("start")
    assert first["pid"] == second["pid"] != os.getpid()
    assert first | {"t": 0} == {
        "event": "start",
        "pid": first["pid"],
        "t": 0,
        "run_id": 1,
        "job": "iso",
        "attempt": 2,
        "slot": "2030-01-02T03:04:00+00:00",
        "worker": "w-1",
        "fence": 7,
        "correlation_id": "req-42",
    }


def test_a_job_without_ctx_is_imported_from_the_import_paths(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    (jobs_dir / "isolated_only_here.py").write_text(
        "import os\n\ndef run(out, value):\n"
        "    with open(out, 'w') as f:\n        f.write(f'{value} {os.getpid()}')\n"
    )
    executor = Executor(1, import_paths=[jobs_dir])
    out = tmp_path / "out.txt"
    try:
        result = run(
            executor.call(
                print,  # not called: the child imports `func`
                is_async=False,
                kwargs={"out": str(out), "value": 5},
                ctx=make_ctx(),
                time_limit=None,
                isolation="process",
                func="isolated_only_here:run",
            )
        )
    finally:
        executor.shutdown()
    assert result.status == "succeeded", result.error
    value, pid = out.read_text().split()
    assert value == "5" and int(pid) != os.getpid()


def test_an_exception_fails_the_run_with_type_message_and_traceback(harness: Harness) -> None:
    result = run(harness.call("fail", message="it broke"))
    assert result.status == "failed" and result.error is not None
    assert result.error["type"] == "ValueError"
    assert result.error["message"] == "it broke"
    traceback = result.error["traceback"]
    assert "isojobs.py" in traceback and "raise ValueError" in traceback


def test_sys_exit_in_a_job_fails_the_run_and_the_child_stays(harness: Harness) -> None:
    async def go() -> list[Result]:
        return [await harness.call("sys_exit"), await harness.call("quick")]

    failed, ok = run(go())
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["type"] == "SystemExit"
    assert ok.status == "succeeded"
    assert len({r["pid"] for r in harness.records("start")}) == 1


def test_an_unimportable_func_fails_the_run(harness: Harness) -> None:
    result = run(harness.call("no_such_function"))
    assert result.status == "failed" and result.error is not None
    assert "no_such_function" in result.error["message"]


def test_unpicklable_arguments_fail_the_run_and_the_child_stays(harness: Harness) -> None:
    async def go() -> list[Result]:
        warm = await harness.call("quick")
        bad = await harness.call("quick", extra=threading.Lock())
        again = await harness.call("quick")
        return [warm, bad, again]

    warm, bad, again = run(go())
    assert (warm.status, bad.status, again.status) == ("succeeded", "failed", "succeeded")
    assert bad.error is not None and "cannot be pickled" in bad.error["message"]
    assert len({r["pid"] for r in harness.records("start")}) == 1


def test_unpicklable_names_each_bad_key() -> None:
    problems = unpicklable({"ok": [1, "a"], "lock": threading.Lock(), "fn": lambda: 1})
    assert set(problems) == {"lock", "fn"}
    assert "lock" in problems["lock"]


# --------------------------------------------------------------------------- stopping


def test_timeouts_kill_a_sleeping_and_a_spinning_child(harness: Harness) -> None:
    async def go() -> tuple[list[Result], float]:
        began = time.monotonic()
        results = await asyncio.gather(
            harness.call("sleep_forever", limit=0.5, ctx=make_ctx(1)),
            harness.call("spin", limit=0.5, ctx=make_ctx(2)),
        )
        return list(results), time.monotonic() - began

    results, took = run(go())
    assert [r.status for r in results] == ["timed_out", "timed_out"]
    assert took < 1.5
    pids = {r["run_id"]: r["pid"] for r in harness.records("start")}
    assert len(set(pids.values())) == 2
    assert all(gone_within(pid, 2) for pid in pids.values())
    # SIGTERM raises in the child, so the sleeping job's finally block ran
    assert [r["pid"] for r in harness.records("cleanup")] == [pids[1]]


def test_sigkill_follows_an_ignored_sigterm_and_capacity_comes_back_at_once(
    tmp_path: Path,
) -> None:
    one = Harness(tmp_path / "out.jsonl", processes=1)

    async def go() -> tuple[Result, Result, float]:
        stuck = await one.call("ignore_sigterm", limit=0.5)
        timed_out_at = time.monotonic()
        nxt = await one.call("quick")
        return stuck, nxt, time.monotonic() - timed_out_at

    try:
        stuck, nxt, next_took = run(go())
        assert (stuck.status, nxt.status) == ("timed_out", "succeeded")
        stubborn, fresh = (r["pid"] for r in one.records("start"))
        assert stubborn != fresh
        assert next_took < 0.8  # the only slot came back before the SIGKILL grace ended
        assert alive(stubborn)  # still in its SIGTERM grace
        assert gone_within(stubborn, 2.5)
    finally:
        one.executor.shutdown()


def test_cancel_kills_the_child_and_sets_ctx_cancelled(harness: Harness) -> None:
    ctx = make_ctx()

    async def go() -> None:
        task = asyncio.create_task(harness.call("sleep_forever", ctx=ctx))
        await harness.started()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go())
    assert ctx.cancelled.is_set()
    [start] = harness.records("start")
    assert gone_within(start["pid"], 2)


def test_a_renew_deadline_stop_kills_the_child_without_the_sigterm_grace(
    harness: Harness,
) -> None:
    """Guarantee 10: past its renew deadline a run's child gets SIGKILL at once (the cancel
    carries KILL_AT_ONCE), even one that ignores SIGTERM and with a grace of 60 s."""
    harness.executor.process_pool.grace = 60.0

    async def go() -> None:
        task = asyncio.create_task(harness.call("ignore_sigterm"))
        await harness.started()
        task.cancel(KILL_AT_ONCE)
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go())
    [start] = harness.records("start")
    assert gone_within(start["pid"], 10)  # not the 60 s grace


def test_children_that_die_fail_the_run_and_are_replaced(harness: Harness) -> None:
    async def go() -> list[Result]:
        return [
            await harness.call("exit_now", code=3),
            await harness.call("segfault"),
            await harness.call("quick"),
        ]

    exited, crashed, ok = run(go())
    assert exited.status == "failed" and exited.error is not None
    assert exited.error["type"] == "ProcessDied"
    assert exited.error["message"] == "worker process died (exit code 3)"
    assert crashed.status == "failed" and crashed.error is not None
    assert crashed.error["message"] == "worker process died (signal 11, SIGSEGV)"
    assert ok.status == "succeeded"
    assert len({r["pid"] for r in harness.records("start")}) == 3


def test_max_memory_fails_the_run_and_is_reset_after_the_call(harness: Harness) -> None:
    limit = 256 * 1024**2

    async def go() -> list[Result]:
        return [
            await harness.call("hog", mb=512, max_memory=limit),
            await harness.call("hog", mb=512),
        ]

    limited, unlimited = run(go())
    assert limited.status == "failed" and limited.error is not None
    assert limited.error["type"] == "MemoryError"
    assert limited.error["message"] == f"exceeded max_memory ({limit} bytes)"
    assert unlimited.status == "succeeded"
    assert len({r["pid"] for r in harness.records("start")}) == 1  # same child, limit gone
    assert [r["size"] for r in harness.records("allocated")] == [512 * 1024**2]


def test_the_pool_runs_at_most_size_calls_at_once(tmp_path: Path) -> None:
    one = Harness(tmp_path / "one.jsonl", processes=1)
    two = Harness(tmp_path / "two.jsonl", processes=2)

    async def overlap(h: Harness) -> set[int]:
        await asyncio.gather(h.call("hold", seconds=0.3), h.call("hold", seconds=0.3))
        return {r["pid"] for r in h.records("start")}

    try:
        assert len(run(overlap(one))) == 1
        assert len(run(overlap(two))) == 2
        spans = sorted((r["t"], r["event"]) for r in one.records())
        assert [e for _, e in spans] == ["start", "end", "start", "end"]  # one after the other
        spans = sorted((r["t"], r["event"]) for r in two.records())
        assert [e for _, e in spans] == ["start", "start", "end", "end"]  # side by side
    finally:
        one.executor.shutdown()
        two.executor.shutdown()


def test_shutdown_stops_busy_and_idle_children(harness: Harness) -> None:
    async def main() -> None:
        stubborn = asyncio.create_task(harness.call("ignore_sigterm"))
        await asyncio.gather(harness.call("quick"), harness.started(2))
        pids = harness.executor.process_pool.pids
        assert len(pids) == 2  # one busy, one idle
        began = time.monotonic()
        harness.executor.shutdown()
        assert time.monotonic() - began < 2.5
        assert all(gone_within(pid, 1) for pid in pids)
        with pytest.raises(RuntimeError):
            await harness.executor.process_pool.run("tests.system.isojobs:quick", {})
        stubborn.cancel()
        await asyncio.gather(stubborn, return_exceptions=True)

    asyncio.run(main())


# --------------------------------------------------------------------------- logs


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_child_logs_are_reemitted_with_the_run_context(
    harness: Harness, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    async def go() -> Result:
        structlog.contextvars.bind_contextvars(run_id=31, job="iso", attempt=2)
        return await harness.call("chatty", ctx=make_ctx(31))

    assert run(go()).status == "succeeded"
    lines = {line["event"]: line for line in log_lines()}
    hello = lines["hello from the child"]
    assert (hello["run_id"], hello["job"], hello["attempt"]) == (31, "iso", 2)
    assert (hello["logger"], hello["level"], hello["answer"]) == ("isojobs", "info", 42)
    from_ctx = lines["ctx log from the child"]
    assert (from_ctx["run_id"], from_ctx["level"], from_ctx["size"]) == (31, "warning", 3)
    caught = lines["child caught an error"]
    assert caught["level"] == "error" and "KeyError: 'inner'" in caught["exception"]
    assert "not shown at info level" not in lines


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_both_start_methods_work(tmp_path: Path, start_method: str) -> None:
    pool = ProcessPool(1, import_paths=[ROOT], start_method=start_method)
    out = str(tmp_path / "out.jsonl")
    try:
        ended = run(pool.run("tests.system.isojobs:no_ctx", {"out": out, "value": 1}))
        assert (ended.status, ended.error, ended.encoded) == ("succeeded", None, None)
        assert isojobs.read(out)[0]["value"] == 1
    finally:
        pool.shutdown()


# --------------------------------------------------------------------------- check


def test_check_refuses_unpicklable_kwargs_of_a_process_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TOML kwargs are JSON and always pickle; a config built in Python may hold anything."""
    from typer.testing import CliRunner

    from jobrunner.cli import core as cli
    from jobrunner.config import Config, JobConfig

    config = Config(
        path=tmp_path / "jr.toml",
        jobs=(
            JobConfig(name="ok", func="isojobs:quick", kwargs={"lock": threading.Lock()}),
            JobConfig(
                name="iso",
                func="isojobs:quick",
                isolation="process",
                kwargs={"out": "x", "lock": threading.Lock()},
            ),
        ),
    )
    monkeypatch.setattr(cli, "load", lambda *_args, **_kwargs: config)
    result = CliRunner().invoke(cli.app, ["check"])
    assert result.exit_code == 2
    assert "jobs[1].kwargs.lock: job 'iso': runs with isolation = 'process'" in result.output
    assert "must be picklable" in result.output and "TypeError" in result.output
    assert "jobs[0]" not in result.output  # thread jobs never pickle their arguments
