"""Every command, given malformed arguments, exits 2 with one clear line and writes nothing:
a table of commands and what is wrong with their arguments, run as real processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobrunner.records import CatalogEntry
from tests.support import AllPorts, run_cli

BIG = "1" + "0" * 25  # overflows a bigint
CASES = [
    (["runs", "show", BIG], f"no run with id {BIG}"),
    (["runs", "show", "0"], "no run with id 0"),
    (["runs", "cancel", BIG], f"no run with id {BIG}"),
    (["runs", "retry", BIG], f"no run with id {BIG}"),
    (["runs", "show", "abc"], "valid integer"),
    (["runs", "list", "--limit", "-3"], "--limit"),
    (["runs", "list", "--since", "yesterday-ish"], "since"),
    (["runs", "list", "--status", "done"], "status"),
    (["runs", "list", "--priority", "high"], "priority"),
    (["jobs", "trigger", "adhoc", "--kwargs", "{not json"], "--kwargs"),
    (["jobs", "trigger", "adhoc", "--kwargs", "[1, 2]"], "--kwargs"),
    (["jobs", "trigger", "adhoc", "--kwargs", '{"a": ' + "[" * 70 + "]" * 70 + "}"], "deep"),
    (["jobs", "trigger", "adhoc", "--kwargs", '{"a": "' + "x" * 70_000 + '"}'], "64 KiB"),
    (["jobs", "trigger", "adhoc", "--timeout", "soon", "--wait"], "timeout"),
    (["jobs", "trigger", "adhoc", "--priority", "99999999999"], "priority"),
    (["jobs", "trigger", "adhoc", "--idempotency-key", "k" * 201], "idempotency_key"),
    (["jobs", "trigger", "no such job"], "no job named"),
    (["schedules", "create", "adhoc", "--key", "k", "--cron", "61 * * * *"], "cron"),
    (["schedules", "create", "adhoc", "--key", "bad key", "--cron", "0 * * * *"], "key"),
    (["prune", "--older-than", "forever"], "older"),
    (["prune", "--older-than", "-3d"], "older"),
]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    url = f"sqlite:///{folder / 'jr.db'}"
    path = folder / "jobrunner.toml"
    path.write_text(f'[database]\nurl = "{url}"\n')
    assert run_cli("db", "upgrade", "-c", str(path)).returncode == 0
    store = AllPorts.from_url(url)
    try:
        entry = CatalogEntry(
            name="adhoc", cron=None, timezone="UTC", config_hash="h", definition={}
        )
        store.publish_catalog([entry], worker_id="w1")
    finally:
        store.close()
    return path


def written(config: Path) -> tuple[str, str]:
    runs = run_cli("runs", "list", "--json", "-c", str(config))
    schedules = run_cli("schedules", "list", "--all", "--json", "-c", str(config))
    return runs.stdout, schedules.stdout


@pytest.mark.system
@pytest.mark.parametrize(
    ("args", "said"), CASES, ids=lambda v: " ".join(v)[:40] if isinstance(v, list) else None
)
def test_malformed_arguments_exit_2_with_one_clear_line(
    config: Path, args: list[str], said: str
) -> None:
    before = written(config)
    done = run_cli(*args, "-c", str(config))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and said.lower() in done.stderr.lower(), done.stderr
    assert "database" not in done.stderr.lower() and "sqlalchemy" not in done.stderr.lower()
    assert written(config) == before
