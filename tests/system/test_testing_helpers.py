"""jobrunner.testing as a user meets it: run_job inline, and a real worker that leaves no
files, processes or threads behind."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from jobrunner.testing import JobrunnerWorker, run_job
from tests.support import write_config

pytestmark = pytest.mark.system


def test_run_job_returns_the_value_or_raises_the_exception(tmp_path: Path) -> None:
    jobs = [
        {"name": "echo", "func": "sysjobs:returns", "kwargs": {"value": 1}},
        {"name": "echo-async", "func": "sysjobs:returns_async"},
        {"name": "boom", "func": "sysjobs:fail", "kwargs": {"message": "no"}},
    ]
    config = write_config(tmp_path / "jr.toml", "sqlite:///unused.db", jobs)
    assert run_job(config, "echo") == 1
    assert run_job(config, "echo", value=[2]) == [2]
    assert run_job(config, "echo-async", value="x") == "x"
    with pytest.raises(RuntimeError, match="no"):
        run_job(config, "boom")
    with pytest.raises(LookupError, match="no job named 'nope'; its jobs: echo, echo-async"):
        run_job(config, "nope")
    assert not (tmp_path / "unused.db").exists()


def test_a_test_worker_runs_jobs_and_leaves_nothing_behind(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "jr.toml", "sqlite:///unused.db", [{"name": "echo", "func": "sysjobs:returns"}]
    )
    threads = threading.active_count()
    worker = JobrunnerWorker(config)
    folder = Path(worker.url.removeprefix("sqlite:///")).parent
    run = worker.enqueue("echo", {"value": {"a": 1}})
    assert worker.wait_for(run.id).result == {"a": 1}
    assert worker.stop() == 0
    assert not folder.exists() and worker.process.poll() is not None
    assert threading.active_count() == threads
