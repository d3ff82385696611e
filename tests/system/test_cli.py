"""The management CLI as a subprocess, against a real database and real `jobrunner run` workers."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from jobrunner.records import CatalogEntry
from tests.support import AllPorts, Workers, run_cli, wait_for, write_config
from tests.system.sysjobs import starts

pytestmark = pytest.mark.system

EVERY_SECOND = "* * * * * *"
JOBS: list[dict[str, Any]] = [
    {"name": "tick", "func": "sysjobs:noop_async", "cron": EVERY_SECOND},
    {"name": "flaky", "func": "sysjobs:fail_until", "retries": 1, "retry_backoff": "0.1s"},
    {"name": "broken", "func": "sysjobs:fail", "kwargs": {"message": "always"}},
    {"name": "long", "func": "sysjobs:sleep_sync", "kwargs": {"seconds": 30}},
]


def cli(config: Path, *args: str, code: int = 0) -> Any:
    """Run `jobrunner ARGS -c CONFIG`; check the exit code; return the completed process."""
    result = run_cli(*args, "-c", str(config))
    assert result.returncode == code, (
        f"jobrunner {' '.join(args)}: exit {result.returncode}, expected {code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result


def cli_json(config: Path, *args: str) -> Any:
    return json.loads(cli(config, *args, "--json").stdout)


def test_jobs_list_next_pause_resume_and_why(tmp_path: Path, pg_url: str, workers: Workers) -> None:
    config = write_config(tmp_path / "jr.toml", pg_url, JOBS)
    worker = workers.start(config)

    jobs = {j["name"]: j for j in cli_json(config, "jobs", "list")}
    assert set(jobs) == {"tick", "flaky", "broken", "long"}
    assert jobs["tick"]["cron"] == EVERY_SECOND and jobs["tick"]["paused"] is False
    assert jobs["tick"]["next_fire"] and jobs["flaky"]["next_fire"] is None
    human = cli(config, "jobs", "list").stdout
    assert "tick" in human and "(trigger only)" in human

    nxt = [datetime.fromisoformat(t) for t in cli_json(config, "jobs", "next", "tick", "-n", "3")]
    assert [b - a for a, b in pairwise(nxt)] == [timedelta(seconds=1)] * 2

    cli(config, "jobs", "pause", "tick")
    paused_at = datetime.now(UTC)
    time.sleep(3)
    resuming_at = datetime.now(UTC)  # slots before this were certainly paused
    cli(config, "jobs", "resume", "tick")
    resumed_at = datetime.now(UTC)
    time.sleep(3)
    assert worker.proc.poll() is None, "pausing needs no restart"

    store = AllPorts.from_url(pg_url)
    try:
        # slots are recorded 0.5 s ahead of their time: leave out the ones not due yet
        rows = store.slot_runs("tick", paused_at, datetime.now(UTC) - timedelta(seconds=1))
    finally:
        store.close()
    during = [r for r in rows if paused_at + timedelta(seconds=0.6) < r.scheduled_for < resuming_at]
    after = [r for r in rows if r.scheduled_for > resumed_at + timedelta(seconds=0.6)]
    assert during and {(r.status, r.reason) for r in during} == {("skipped", "paused")}
    assert after and {r.status for r in after} == {"succeeded"}

    report = cli_json(config, "why", "tick", "--since", "8s")
    assert report["expected"] == len(report["slots"]) >= 7
    states = {(s["state"], s["outcome"], s["reason"]) for s in report["slots"]}
    assert ("skipped", "skipped", "paused") in states
    assert ("ran", "succeeded", None) in states
    slot_times = [datetime.fromisoformat(s["slot"]) for s in report["slots"]]
    assert [b - a for a, b in pairwise(slot_times)] == [timedelta(seconds=1)] * (
        len(slot_times) - 1
    ), "one line per expected slot"
    settled = [
        s for s in report["slots"] if datetime.fromisoformat(s["slot"]) < resumed_at
    ]  # older than the 5 s a slot may take to be recorded
    assert all(s["state"] != "no row" for s in settled), settled
    ran = next(s for s in report["slots"] if s["state"] == "ran")
    assert ran["attempts"] == 1 and ran["worker"] and ran["run_ids"]

    text = cli(config, "why", "tick", "--since", "30s").stdout
    assert "skipped: paused" in text and "ran: succeeded" in text
    assert "before the job's first recorded slot" in text  # the worker started < 30 s ago


def test_trigger_wait_runs_list_show_and_prune(
    tmp_path: Path, pg_url: str, workers: Workers
) -> None:
    config = write_config(tmp_path / "jr.toml", pg_url, JOBS)
    worker = workers.start(config)

    ok = cli(config, "jobs", "trigger", "flaky", "--wait", "--correlation-id", "deploy-7")
    assert "attempt 2/2): succeeded" in ok.stdout, ok.stdout
    bad = cli(config, "jobs", "trigger", "broken", "--wait", code=1)
    assert "failed" in bad.stdout and "RuntimeError: always" in bad.stdout

    flaky = cli_json(config, "runs", "list", "--job", "flaky")
    assert [(r["attempt"], r["status"], r["trigger"]) for r in flaky] == [
        (2, "succeeded", "retry"),
        (1, "failed", "manual"),
    ]
    assert {r["correlation_id"] for r in flaky} == {"deploy-7"}
    assert cli_json(config, "runs", "list", "--correlation-id", "deploy-7") == flaky
    failed = cli_json(config, "runs", "list", "--status", "failed", "--since", "1m")
    assert {r["job_name"] for r in failed} == {"flaky", "broken"}
    assert len(cli_json(config, "runs", "list", "--limit", "1")) == 1

    shown = cli_json(config, "runs", "show", str(flaky[1]["id"]))
    assert shown["error"]["type"] == "ValueError" and "Traceback" in shown["error"]["traceback"]
    assert [(a["id"], a["status"]) for a in shown["attempts"]] == [
        (flaky[1]["id"], "failed"),
        (flaky[0]["id"], "succeeded"),
    ]
    human = cli(config, "runs", "show", str(flaky[0]["id"])).stdout
    assert "attempts (2)" in human and "ValueError: attempt 1 fails" in human

    worker.signal(signal.SIGTERM)  # no new tick rows while counting
    assert worker.wait() == 0
    before = len(cli_json(config, "runs", "list", "--limit", "10000"))
    pruned = cli_json(config, "prune", "--older-than", "0s", "--keep-last", "1")
    after = cli_json(config, "runs", "list", "--limit", "10000")
    assert pruned["deleted"] == before - len(after) > 0
    assert len([r for r in after if r["job_name"] == "flaky"]) == 1  # the newest one is kept

    stuck = cli(config, "jobs", "trigger", "flaky", "--wait", "--timeout", "0.5s", code=1)
    assert "warning: no worker is alive" in stuck.stderr
    assert stuck.stderr.strip().endswith("not finished after 500ms")


def test_cancel_locks_workers_and_plan(tmp_path: Path, pg_url: str, workers: Workers) -> None:
    config = write_config(tmp_path / "jr.toml", pg_url, JOBS)
    worker = workers.start(config)

    run = cli_json(config, "jobs", "trigger", "long")
    assert run["status"] == "queued"
    store = AllPorts.from_url(pg_url)
    try:
        assert wait_for(lambda: store.get_run(run["id"]).status == "running", 10)
        worker_id = store.get_run(run["id"]).worker_id

        locks = [lock for lock in cli_json(config, "locks", "list") if lock["job"] == "long"]
        assert len(locks) == 1 and locks[0]["holder"] == worker_id
        assert locks[0]["run_id"] == run["id"] and locks[0]["fence"] >= 1
        assert 0 < locks[0]["expires_in"] <= 4  # lease_ttl 4s, renewed every second

        (alive,) = cli_json(config, "workers", "list")
        assert (alive["worker_id"], alive["pid"], alive["alive"]) == (worker_id, worker.pid, True)
        assert len(alive["config_hash"]) == 16 and set(alive["jobs"]) == {j["name"] for j in JOBS}
        assert alive["config_hash"] in cli(config, "workers", "list").stdout

        requested = time.monotonic()
        out = cli(config, "runs", "cancel", str(run["id"])).stdout
        assert "cancel requested" in out
        assert wait_for(lambda: store.get_run(run["id"]).status == "cancelled", 5)
        assert time.monotonic() - requested < 4, "cancelled at the next heartbeat (1s)"
        cli(config, "runs", "cancel", str(run["id"]))  # already cancelled: fine
        queued = store.enqueue("long", run_at=datetime.now(UTC) + timedelta(hours=1))
        assert "cancelled run" in cli(config, "runs", "cancel", str(queued.id)).stdout
        assert store.get_run(queued.id).status == "cancelled"
        done = store.enqueue("flaky", {"attempt": 1})
        assert wait_for(lambda: store.get_run(done.id).status == "succeeded", 10)
        refused = cli(config, "runs", "cancel", str(done.id), code=1)
        assert refused.stderr.strip() == f"error: run {done.id} already finished: succeeded"

        changed = [
            {**JOBS[0], "cron": "* * * * * */5"},
            *JOBS[1:3],
            {"name": "new", "func": "sysjobs:noop_async"},
        ]
        plan = cli_json(write_config(tmp_path / "next.toml", pg_url, changed), "plan")
        assert list(plan["add"]) == ["new"]
        assert plan["change"] == {"tick": {"cron": {"from": EVERY_SECOND, "to": "* * * * * */5"}}}
        assert plan["remove"] == {"long": {"defined_by_live_workers": [worker_id]}}
        assert plan["unchanged"] == 2
        text = cli(tmp_path / "next.toml", "plan").stdout
        assert "+ new" in text and "~ tick" in text and "- long" in text
        assert "Plan: 1 to add, 1 to change, 1 to remove, 2 unchanged." in text
        assert (
            "Plan: 0 to add, 0 to change, 0 to remove, 4 unchanged." in cli(config, "plan").stdout
        )
        assert {e.name for e in store.list_jobs()} == {j["name"] for j in JOBS}, (
            "plan writes nothing"
        )

        worker.signal(signal.SIGSTOP)  # stops heartbeating: stale after lease_ttl
        try:
            assert wait_for(lambda: not cli_json(config, "workers", "list")[0]["alive"], 8)
            assert "stale" in cli(config, "workers", "list").stdout
        finally:
            worker.signal(signal.SIGCONT)
    finally:
        store.close()
    assert not [s for s in starts(str(tmp_path / "starts.jsonl")) if s["job"] == "new"]


def _publish(url: str) -> None:
    store = AllPorts.from_url(url)
    try:
        store.publish_catalog(
            [
                CatalogEntry(
                    name="tick",
                    cron=EVERY_SECOND,
                    timezone="UTC",
                    config_hash="h",
                    definition={"name": "tick"},
                ),
                CatalogEntry(
                    name="adhoc", cron=None, timezone="UTC", config_hash="h2", definition={}
                ),
            ],
            worker_id="w",
        )
    finally:
        store.close()


BAD_INPUT = [
    (("jobs", "trigger", "nope"), "no job named 'nope' in the catalog"),
    (("jobs", "trigger", "tick", "--kwargs", "{bad"), "--kwargs is not valid JSON"),
    (("jobs", "trigger", "tick", "--kwargs", "[1, 2]"), "--kwargs must be a JSON object"),
    (("jobs", "trigger", "tick", "--wait", "--timeout", "soon"), "--timeout: invalid duration"),
    (("jobs", "trigger", "tick", "--priority", "2000000"), "priority must be an integer from"),
    (("jobs", "trigger", "tick", "--priority", "high"), "--priority: expected an integer"),
    (("jobs", "pause", "nope"), "no job named 'nope'"),
    (("jobs", "next", "nope"), "no job named 'nope'"),
    (("runs", "list", "--status", "bogus"), "--status: unknown status 'bogus'"),
    (("runs", "list", "--since", "last week"), "--since: invalid value 'last week'"),
    (("runs", "list", "--job", "nope"), "no job named 'nope'"),
    (("runs", "show", "424242"), "no run with id 424242"),
    (("runs", "cancel", "424242"), "no run with id 424242"),
    (("prune", "--older-than", "30 days"), "--older-than: invalid duration"),
    (("why", "nope"), "no job named 'nope'"),
    (("why", "adhoc"), "job 'adhoc' has no cron"),
    (("why", "tick", "--since", "1h", "--until", "2h"), "--since"),
]


@pytest.mark.parametrize("backend", ["sqlite_url", "pg_url"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    db_url: str = request.getfixturevalue(backend)
    _publish(db_url)
    config = write_config(tmp_path / "jr.toml", db_url, [])
    for args, message in BAD_INPUT:
        result = cli(config, *args, code=2)
        assert result.stderr.startswith("error: ") and message in result.stderr, (args, result)
        assert result.stderr.count("\n") == 1, f"one line: {result.stderr!r}"
        assert "Traceback" not in result.stderr + result.stdout
    store = AllPorts.from_url(db_url)
    try:
        assert store.list_runs(limit=10) == [], "nothing was written"
        assert not any(e.paused for e in store.list_jobs())
    finally:
        store.close()
