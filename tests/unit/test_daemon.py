"""`jobrunner run` is read without typer (jobrunner.daemon); the cancel flag of a run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobrunner import daemon
from jobrunner.context import Cancelled
from jobrunner.daemon import run_args


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run"], (True, None)),
        (["run", "-c", "a.toml"], (True, Path("a.toml"))),
        (["run", "--config", "a.toml"], (True, Path("a.toml"))),
        (["run", "--config=a.toml"], (True, Path("a.toml"))),
        # everything else is typer's, which explains it
        (["run", "--help"], (False, None)),
        (["run", "-c"], (False, None)),
        (["run", "-c", "--help"], (False, None)),
        (["run", "--config="], (False, None)),
        (["run", "-x", "a.toml"], (False, None)),
        (["run", "-c", "a.toml", "extra"], (False, None)),
        (["check", "-c", "a.toml"], (False, None)),
        ([], (False, None)),
    ],
)
def test_run_args_takes_only_the_plain_run_command(
    argv: list[str], expected: tuple[bool, Path | None]
) -> None:
    assert run_args(argv) == expected


def test_run_with_a_bad_config_exits_2_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[worker]\nconcurrency = 0\n")
    done = subprocess.run(
        [sys.executable, "-m", "jobrunner", "run", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {bad}") and "concurrency" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_does_not_load_the_cli_libraries() -> None:
    code = (
        "import sys\n"
        "from jobrunner.__main__ import _structlog_without_rich\n"
        "_structlog_without_rich()\n"
        "import jobrunner.daemon, jobrunner.worker.supervisor, jobrunner.logging\n"
        "print(sorted(m for m in ('typer', 'pydantic', 'rich', 'alembic') if m in sys.modules))\n"
        "import rich.console\n"  # still importable afterwards
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_worker_process_tunes_collection_and_thread_switches() -> None:
    # In a child: freezing would keep this test process's objects forever.
    code = (
        "import gc, json, sys\n"
        "from jobrunner import daemon\n"
        "def state():\n"
        "    return [gc.get_threshold(), gc.get_freeze_count(), sys.getswitchinterval()]\n"
        "before = state()\n"
        "daemon._tune_interpreter()\n"
        "print(json.dumps([before, state()]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    before, after = json.loads(done.stdout)
    assert before[1] == 0 and after[1] > 1000  # start-up's objects are frozen
    assert tuple(after[0]) == daemon.GC_THRESHOLD != tuple(before[0])
    assert after[2] == pytest.approx(daemon.SWITCH_INTERVAL) and before[2] > after[2]


def test_cancelled_behaves_like_an_event() -> None:
    flag = Cancelled()
    assert not flag.is_set()
    assert flag.wait(0.01) is False
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(flag.wait(10)))
    waiter.start()
    time.sleep(0.05)
    flag.set()
    waiter.join(5)
    assert woke == [True]
    assert flag.is_set() and flag.wait(0) is True
    fresh = Cancelled()
    fresh.set()
    assert fresh.wait(0) is True  # set before anyone waited
