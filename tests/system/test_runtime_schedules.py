"""Runtime schedules with real `jobrunner run` processes: changes racing with firing, the
CLI (bad input exits 2 and writes nothing), backfill, `why --key`, and a job that leaves
the config retiring its schedules visibly."""

from __future__ import annotations

import itertools
import json
import random
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobrunner import Client
from jobrunner.records import Run
from tests.support import Workers, run_cli, wait_for, write_config

pytestmark = pytest.mark.system

TICK = {"name": "tick", "func": "sysjobs:returns", "overlap": "allow"}
TYPED = {"name": "typed", "func": "sysjobs:typed", "kwargs": {"region": "us"}}


def runs_of(client: Client, job: str) -> list[Run]:
    return client.list_runs(job=job, limit=10_000)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_changes_racing_with_firing_keep_one_start_per_slot_and_version(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    """Two replicas fire per-second schedules while a client updates, pauses, resumes,
    deletes and re-creates them: every slot starts at most once, each run has the kwargs of
    the version that decided its slot, and no slot of a deleted schedule runs after it."""
    config = write_config(tmp_path / "jr.toml", db_url, [TICK])
    procs = [workers.start(config), workers.start(config)]
    rng = random.Random(5)
    client = Client.from_url(db_url)
    keys = [f"k{i}" for i in range(4)]
    kwargs_of: dict[tuple[str, int], dict[str, object]] = {}
    for key in keys:
        row = client.create_schedule("tick", "* * * * * *", key=key, kwargs={"value": 0})
        kwargs_of[(key, row.version)] = dict(row.kwargs)
    deleted: dict[str, tuple[int, object]] = {}
    try:
        for step in range(40):
            key = rng.choice(keys)
            action = rng.choice(
                ["update", "update", "update", "pause", "resume", "resume", "delete"]
            )
            try:
                if action == "update":
                    row = client.update_schedule("tick", key, kwargs={"value": step})
                elif action == "pause":
                    row = client.pause_schedule("tick", key)
                elif action == "resume":
                    row = client.resume_schedule("tick", key)
                else:
                    row = client.delete_schedule("tick", key)
                    deleted[key] = (row.version, row.updated_at)
            except LookupError:  # deleted before: make it again
                row = client.create_schedule("tick", "* * * * * *", key=key, kwargs={"value": step})
                deleted.pop(key, None)
            kwargs_of[(key, row.version)] = dict(row.kwargs)
            time.sleep(rng.uniform(0.05, 0.3))
        for key in keys:  # the last seconds fire every live schedule
            if key not in deleted:
                row = client.resume_schedule("tick", key)
                kwargs_of[(key, row.version)] = dict(row.kwargs)
        time.sleep(3)
    finally:
        for proc in procs:
            proc.signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(30) == 0
    runs = [r for r in runs_of(client, "tick") if r.schedule_key]
    client.close()
    started = [r for r in runs if r.started_at is not None]
    assert len(started) > 15, "the schedules fired"
    slots = [(r.schedule_key, r.scheduled_for, r.attempt) for r in runs]
    assert len(slots) == len(set(slots)), "one row per (schedule, slot, attempt)"
    for r in started:
        assert r.schedule_version is not None
        assert r.kwargs == kwargs_of[(r.schedule_key, r.schedule_version)], r
    for key, (version, at) in deleted.items():
        late = [r for r in started if r.schedule_key == key and r.scheduled_for > at]  # type: ignore[operator]
        assert late == [], f"{key} ran after its deletion (version {version}): {late}"
    paused = [r for r in runs if r.reason == "paused"]
    assert all(r.status == "skipped" for r in paused)


@pytest.mark.parametrize("db_url", ["postgresql", "sqlite"], indirect=True)
def test_cli_schedules_backfill_and_why_with_a_real_worker(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    config = write_config(tmp_path / "jr.toml", db_url, [TYPED])
    proc = workers.start(config)
    cfg = ("-c", str(config))
    for args, said in (
        (["--cron", "0 25 * * *", "--kwargs", '{"user_id": 1}'], "hour field '25' is invalid"),
        (["--cron", "* * * * *", "--kwargs", '{"user_id": "x"}'], "must be integer"),
        (["--cron", "* * * * *", "--kwargs", "{nope"], "--kwargs is not valid JSON"),
        (["--cron", "* * * * *", "--timezone", "Europe/Berln"], "did you mean 'Europe/Berlin'"),
        (["--kwargs", '{"user_id": 1}'], "--cron is required"),
    ):
        done = run_cli("schedules", "create", "typed", "--key", "u1", *args, *cfg)
        assert done.returncode == 2 and said in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    missing = run_cli("schedules", "create", "nope", "--key", "u1", "--cron", "* * * * *", *cfg)
    assert missing.returncode == 2 and "'nope'" in missing.stderr
    listed = run_cli("schedules", "list", "--all", "--json", *cfg)
    assert json.loads(listed.stdout) == [], "nothing was written"
    made = run_cli(
        "schedules", "create", "typed", "--key", "u1", "--cron", "* * * * * */2",
        "--kwargs", '{"user_id": 7}', *cfg,
    )  # fmt: skip
    assert made.returncode == 0 and "created schedule 'u1' of typed (version 1" in made.stdout
    nxt = run_cli("jobs", "next", "typed", "--key", "u1", "-n", "3", "--json", *cfg)
    times = [datetime.fromisoformat(t) for t in json.loads(nxt.stdout)]
    assert [b - a for a, b in itertools.pairwise(times)] == [timedelta(seconds=2)] * 2
    with Client.from_url(db_url) as client:
        assert wait_for(lambda: any(r.result == 7 for r in runs_of(client, "typed")), 20)
        assert run_cli("schedules", "pause", "typed", "--key", "u1", *cfg).returncode == 0
        paused_at = client.get_schedule("typed", "u1").updated_at
        assert wait_for(
            lambda: any(
                r.reason == "paused" and paused_at < r.scheduled_for < datetime.now(UTC)  # type: ignore[operator]
                for r in runs_of(client, "typed")
            ),
            15,
        )
        why = run_cli("why", "typed", "--key", "u1", "--since", "1m", *cfg)
        assert why.returncode == 0, why.stderr
        assert "schedule 'u1', paused, version 2" in why.stdout and "VERSION" in why.stdout
        assert "ran: succeeded" in why.stdout and "skipped: paused" in why.stdout
        # The slots before the schedule existed have no row: a backfill queues them once.
        since = (client.get_schedule("typed", "u1").created_at - timedelta(seconds=9)).isoformat()
        dry = run_cli("schedules", "backfill", "typed", "--key", "u1", "--from", since,
                      "--dry-run", "--json", *cfg)  # fmt: skip
        planned = json.loads(dry.stdout)["slots"]
        assert dry.returncode == 0 and len(planned) >= 4, dry.stdout
        assert run_cli("schedules", "resume", "typed", "--key", "u1", *cfg).returncode == 0
        done = run_cli("schedules", "backfill", "typed", "--key", "u1", "--from", since,
                       "--json", *cfg)  # fmt: skip
        assert json.loads(done.stdout)["slots"][: len(planned)] == planned
        again = run_cli("schedules", "backfill", "typed", "--key", "u1", "--from", since,
                        "--json", *cfg)  # fmt: skip
        assert json.loads(again.stdout)["slots"] == [], "a second backfill queues nothing"
        backfilled = {r.scheduled_for.isoformat() for r in runs_of(client, "typed")  # type: ignore[union-attr]
                      if r.reason == "backfill"}  # fmt: skip
        assert set(planned) <= backfilled
        assert wait_for(
            lambda: all(
                r.status == "succeeded" for r in runs_of(client, "typed") if r.reason == "backfill"
            ),
            20,
        )
        assert run_cli("schedules", "delete", "typed", "--key", "u1", *cfg).returncode == 0
        gone = run_cli("schedules", "pause", "typed", "--key", "u1", *cfg)
        assert gone.returncode == 2 and "it was deleted" in gone.stderr
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_job_leaving_the_config_retires_its_schedules_visibly(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    old = write_config(tmp_path / "old.toml", db_url, [TICK, TYPED])
    proc = workers.start(old)
    with Client.from_url(db_url) as client:
        client.create_schedule("tick", "* * * * *", key="a")
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        new = write_config(tmp_path / "new.toml", db_url, [TYPED])
        replaced = workers.start(new)
        assert wait_for(lambda: client.get_schedule("tick", "a").status == "retired", 30)
        row = client.get_schedule("tick", "a")
        assert row.next_fire_at is None and "no longer" in (row.status_note or "")
        assert client.list_schedules() == []
        listed = run_cli("schedules", "list", "--all", "-c", str(new))
        assert "retired" in listed.stdout
    assert wait_for(
        lambda: bool(replaced.find("runtime schedule retired: its job is no longer defined")), 5
    )
    replaced.signal(signal.SIGTERM)
    assert replaced.wait(30) == 0
    with Client.from_url(db_url) as client:
        assert client.list_runs(status="queued") == [], "no slot of a retired schedule waits"
