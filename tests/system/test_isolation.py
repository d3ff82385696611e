"""`isolation = "process"` with real `jobrunner run` processes on PostgreSQL: children are
killed at their timeout and on cancel, crashes and memory limits fail the run, the worker
lives on, and the child's logs reach the worker's log with the run's context."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner.records import Run
from tests.support import AllPorts, WorkerProcess, Workers, run_cli, wait_for, write_config
from tests.system import isojobs

pytestmark = pytest.mark.system


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Scenario:
    """One worker with process-isolated jobs writing to `out`, and a store to drive it."""

    def __init__(self, tmp_path: Path, db_url: str, workers: Workers) -> None:
        self.tmp_path = tmp_path
        self.db_url = db_url
        self.workers = workers
        self.out = str(tmp_path / "out.jsonl")
        self.store = AllPorts.from_url(db_url)

    def start(self, jobs: list[dict[str, Any]], **worker: Any) -> WorkerProcess:
        for job in jobs:
            job.setdefault("isolation", "process")
            job.setdefault("kwargs", {}).setdefault("out", self.out)
        config = write_config(self.tmp_path / "jr.toml", self.db_url, jobs, worker=worker)
        return self.workers.start(config)

    def records(self, event: str = "start", job: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in isojobs.read(self.out)
            if r["event"] == event and (job is None or r.get("job") == job)
        ]

    def run(self, run_id: int) -> Run:
        return self.store.get_run(run_id)

    def settled(self, *runs: Run, timeout: float = 15) -> list[Run]:
        def done() -> bool:
            return all(self.run(r.id).finished_at is not None for r in runs)

        assert wait_for(done, timeout), [self.run(r.id) for r in runs]
        return [self.run(r.id) for r in runs]


@pytest.fixture
def scenario(tmp_path: Path, pg_url: str, workers: Workers) -> Iterator[Scenario]:
    s = Scenario(tmp_path, pg_url, workers)
    yield s
    s.store.close()


def test_hung_and_spinning_jobs_are_killed_at_their_timeout(scenario: Scenario) -> None:
    proc = scenario.start(
        [
            {"name": "sleeper", "func": "isojobs:sleep_forever", "timeout": "1s"},
            {"name": "spinner", "func": "isojobs:spin", "timeout": "1s"},
            {"name": "after", "func": "isojobs:quick"},
        ],
        concurrency=2,
    )
    hung = [scenario.store.enqueue("sleeper"), scenario.store.enqueue("spinner")]
    assert wait_for(lambda: len(scenario.records()) == 2, 10), proc.log_path.read_text()
    after = scenario.store.enqueue("after")  # both of the worker's 2 places are taken
    sleeper, spinner, done = scenario.settled(*hung, after)
    assert (sleeper.status, spinner.status, done.status) == ("timed_out", "timed_out", "succeeded")
    assert sleeper.error is not None and sleeper.error["message"] == "timed out after 1.0s"
    starts = {r["job"]: r for r in scenario.records()}
    hung_began = max(starts["sleeper"]["t"], starts["spinner"]["t"])
    # capacity came back at the timeout: the queued run started well within the kill grace
    assert starts["after"]["t"] - hung_began < 1.0 + 0.8
    assert wait_for(
        lambda: not alive(starts["sleeper"]["pid"]) and not alive(starts["spinner"]["pid"]), 3
    )
    assert scenario.records("cleanup", "sleeper")  # SIGTERM first: its finally block ran
    assert proc.proc.poll() is None


def test_crashes_and_memory_errors_fail_the_run_and_the_worker_lives_on(
    scenario: Scenario,
) -> None:
    proc = scenario.start(
        [
            {"name": "exits", "func": "isojobs:exit_now", "kwargs": {"code": 3}},
            {"name": "segfaults", "func": "isojobs:segfault"},
            {
                "name": "hog",
                "func": "isojobs:hog",
                "kwargs": {"mb": 1024},
                "max_memory": "256MiB",
            },
            {"name": "after", "func": "isojobs:quick"},
        ]
    )
    runs = [scenario.store.enqueue(name) for name in ("exits", "segfaults", "hog")]
    exits, segfaults, hog = scenario.settled(*runs)
    assert (exits.status, segfaults.status, hog.status) == ("failed", "failed", "failed")
    assert exits.error is not None and segfaults.error is not None and hog.error is not None
    assert exits.error["message"] == "worker process died (exit code 3)"
    assert segfaults.error["message"] == "worker process died (signal 11, SIGSEGV)"
    assert hog.error["type"] == "MemoryError"
    assert hog.error["message"] == f"exceeded max_memory ({256 * 1024**2} bytes)"
    assert not scenario.records("allocated")
    [after] = scenario.settled(scenario.store.enqueue("after"))
    assert after.status == "succeeded"
    assert proc.proc.poll() is None
    finished = {e["run_id"]: e for e in proc.find("run finished")}
    assert finished[exits.id]["error"] == "ProcessDied: worker process died (exit code 3)"


def test_child_logs_reach_the_worker_log_with_the_run_context(scenario: Scenario) -> None:
    proc = scenario.start([{"name": "chatty", "func": "isojobs:chatty"}])
    run = scenario.store.enqueue("chatty", correlation_id="req-7")
    [done] = scenario.settled(run)
    assert done.status == "succeeded"
    assert wait_for(lambda: bool(proc.find("ctx log from the child")), 5)
    hello = proc.find("hello from the child")[0]
    assert (hello["run_id"], hello["job"], hello["attempt"]) == (run.id, "chatty", 1)
    assert hello["correlation_id"] == "req-7" and hello["worker_id"]
    assert (hello["logger"], hello["level"], hello["answer"]) == ("isojobs", "info", 42)
    from_ctx = proc.find("ctx log from the child")[0]
    assert (from_ctx["run_id"], from_ctx["level"], from_ctx["size"]) == (run.id, "warning", 3)
    assert "KeyError: 'inner'" in proc.find("child caught an error")[0]["exception"]
    assert not proc.find("not shown at info level")


def test_cancel_kills_the_child_and_a_dead_worker_leaves_no_child(scenario: Scenario) -> None:
    proc = scenario.start(
        [
            {"name": "sleeper", "func": "isojobs:sleep_forever"},
            {"name": "after", "func": "isojobs:quick"},
        ]
    )
    run = scenario.store.enqueue("sleeper")
    assert wait_for(lambda: bool(scenario.records()), 10), proc.log_path.read_text()
    pid = scenario.records()[0]["pid"]
    scenario.store.cancel_run(run.id)
    [cancelled] = scenario.settled(run, timeout=5)
    assert cancelled.status == "cancelled"
    assert wait_for(lambda: not alive(pid), 3)
    assert scenario.records("cleanup", "sleeper")
    [after] = scenario.settled(scenario.store.enqueue("after"))
    assert after.status == "succeeded"

    # SIGKILL the worker while a child runs: the child goes too (it dies with its parent)
    scenario.store.enqueue("sleeper")
    assert wait_for(lambda: len(scenario.records(job="sleeper")) == 2, 10)
    orphan = scenario.records(job="sleeper")[1]["pid"]
    proc.kill()
    assert wait_for(lambda: not alive(orphan), 5)


def test_check_explains_pickling_and_refuses_async_process_jobs(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    good = write_config(
        tmp_path / "good.toml",
        db,
        [
            {"name": "iso", "func": "isojobs:quick", "isolation": "process"},
            {"name": "plain", "func": "sysjobs:noop_sync"},
        ],
    )
    result = run_cli("check", "-c", str(good))
    assert result.returncode == 0, result.stderr
    assert "sync, process" in result.stdout
    assert "arguments" in result.stdout and "must be picklable" in result.stdout
    bad = write_config(
        tmp_path / "bad.toml",
        db,
        [{"name": "a", "func": "sysjobs:noop_async", "isolation": "process"}],
    )
    result = run_cli("check", "-c", str(bad))
    assert result.returncode == 2
    assert "jobs[0].isolation: job 'a': isolation = 'process' runs plain def" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()  # check writes nothing
