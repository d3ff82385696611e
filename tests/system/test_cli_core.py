"""The core commands as a new user runs them: check, db upgrade/status, run's config lookup,
bad input (exit 2, nothing written), secrets masked in logs."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobrunner.store import migrate
from tests.support import ROOT, AllPorts, Workers, run_cli, write_config

pytestmark = pytest.mark.system


def test_check_the_example_config_prints_next_fire_times(tmp_path: Path) -> None:
    result = run_cli(
        "check",
        "-c",
        str(ROOT / "config.example.toml"),
        env={"JOBRUNNER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"},
    )
    assert result.returncode == 0, result.stderr
    for name in ("nightly-report", "tick", "cleanup", "send-welcome-email"):
        assert name in result.stdout
    assert "CET" in result.stdout  # nightly-report's fire times are in Europe/Berlin
    assert not (tmp_path / "x.db").exists()  # check writes nothing
    # the effective overlap: cron jobs forbid, trigger-only jobs run as a queue
    assert "OVERLAP" in result.stdout
    overlap = {
        line.split()[0]: (line.split()[3], line.split()[4])
        for line in result.stdout.splitlines()
        if line.split() and line.split()[0] in ("nightly-report", "report", "send-welcome-email")
    }
    assert overlap == {
        "nightly-report": ("default", "forbid"),
        "report": ("default", "allow"),
        "send-welcome-email": ("default", "allow"),
    }


def test_config_falls_back_to_env_then_cwd(tmp_path: Path) -> None:
    config = write_config(tmp_path / "custom.toml", "sqlite:///x.db", [])
    via_env = run_cli("check", env={"JOBRUNNER_CONFIG": str(config)})
    assert via_env.returncode == 0, via_env.stderr
    missing = run_cli("check", env={"JOBRUNNER_CONFIG": str(tmp_path / "nope.toml")})
    assert missing.returncode == 2 and "nope.toml" in missing.stderr


def test_bad_config_lists_every_error_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    db = tmp_path / "never.db"
    path.write_text(
        f'[database]\nurl = "sqlite:///{db}"\n[worker]\nconcurrncy = 4\n'
        '[[jobs]]\nname = "a"\nfunc = "nope.module:f"\ncron = "61 * * * *"\n'
        'timezone = "Mars/Base"\n'
        '[[jobs]]\nname = "a"\nfunc = "builtins:print"\noverlap = "sometimes"\n'
    )
    for command in ("check", "run"):
        result = run_cli(command, "-c", str(path))
        assert result.returncode == 2
        err = result.stderr
        assert "Traceback" not in err
        for needle in (
            "concurrncy",
            "did you mean",
            "jobs[0].cron",
            "Mars/Base",
            "nope.module",
            "duplicate",
            "sometimes",
            "forbid",
        ):
            assert needle in err, f"{needle!r} missing from:\n{err}"
        assert not db.exists(), "bad input must write nothing"


def test_db_upgrade_and_status(tmp_path: Path, empty_pg_url: str) -> None:
    config = write_config(tmp_path / "jr.toml", empty_pg_url, [])
    before = run_cli("db", "status", "-c", str(config), "--json")
    assert before.returncode == 1 and json.loads(before.stdout)["current"] is None
    up = run_cli("db", "upgrade", "-c", str(config))
    assert up.returncode == 0, up.stderr
    after = run_cli("db", "status", "-c", str(config), "--json")
    assert after.returncode == 0 and json.loads(after.stdout)["up_to_date"] is True
    store = AllPorts.from_url(empty_pg_url)
    assert migrate.status(store.engine).current == migrate.head_revision()
    store.close()


def test_database_password_is_masked_in_logs_and_errors(
    tmp_path: Path, pg_url: str, workers: Workers
) -> None:
    url = sa.make_url(pg_url).set(password="s3cr3t-pw").render_as_string(hide_password=False)
    config = write_config(tmp_path / "jr.toml", url, [{"name": "n", "func": "sysjobs:noop_async"}])
    proc = workers.start(config)  # trust auth ignores the password; it must never be printed
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    text = proc.log_path.read_text()
    assert "worker started" in text and "s3cr3t-pw" not in text and "***" in text
    down = sa.make_url(url).set(port=1).render_as_string(hide_password=False)
    bad = write_config(tmp_path / "down.toml", down, [])
    result = run_cli("db", "status", "-c", str(bad))
    assert result.returncode == 1 and "s3cr3t-pw" not in result.stderr + result.stdout
