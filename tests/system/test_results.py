"""Results: a job's return value is stored on its run and `wait` returns the final run, with
real worker processes on both databases; a value that is not JSON or too large never loses
the outcome."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from jobrunner import AsyncClient, Client, WaitTimeout
from jobrunner.errors import BadInput, InvalidArguments
from tests.support import Workers, run_cli, write_config

pytestmark = pytest.mark.system

JOBS = [
    {"name": "echo", "func": "sysjobs:returns"},
    {"name": "echo-async", "func": "sysjobs:returns_async"},
    {"name": "echo-child", "func": "sysjobs:returns", "isolation": "process"},
    {"name": "opaque", "func": "sysjobs:returns_object"},
    {"name": "big", "func": "sysjobs:returns_big"},
    {"name": "big-child", "func": "sysjobs:returns_big", "isolation": "process"},
    {"name": "slow", "func": "sysjobs:sleep_async", "kwargs": {"seconds": 3}},
    {
        "name": "flaky",
        "func": "sysjobs:fail_until",
        "kwargs": {"attempt": 2},
        "retries": 1,
        "retry_backoff": "0.2s",
    },
]
VALUE = {"total": 3, "items": ["a", None, 1.5], "ok": True}


@pytest.mark.parametrize("db_url", ["postgresql", "sqlite"], indirect=True)
def test_results_are_stored_and_wait_returns_the_final_run(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    config = write_config(tmp_path / "jr.toml", db_url, JOBS, worker={"max_result_size": "10kB"})
    proc = workers.start(config)
    client = Client.from_url(db_url)
    try:
        for job in ("echo", "echo-async", "echo-child"):
            run = client.wait(client.enqueue(job, {"value": VALUE}).id, timeout=30)
            assert (run.status, run.result, run.result_note) == ("succeeded", VALUE, None), job
        nothing = client.wait(client.enqueue("echo", {}).id, timeout=30)
        assert (nothing.result, nothing.result_note) == (None, None)
        opaque = client.wait(client.enqueue("opaque").id, timeout=30)
        assert opaque.status == "succeeded" and opaque.result is None
        assert opaque.result_note is not None and "not JSON" in opaque.result_note
        for job in ("big", "big-child"):
            big = client.wait(client.enqueue(job, {"size": 20_000}).id, timeout=30)
            assert big.status == "succeeded" and big.result is None, job
            assert "over [worker] max_result_size (10,000 bytes)" in (big.result_note or "")
        fits = client.wait(client.enqueue("big", {"size": 9_000}).id, timeout=30)
        assert fits.result == "x" * 9_000
        # wait follows retries: the first attempt fails, the second succeeds
        flaky = client.enqueue("flaky")
        final = client.wait(flaky.id, timeout=60)
        assert (final.status, final.attempt, final.retry_of) == ("succeeded", 2, flaky.id)
        slow = client.enqueue("slow")
        began = time.monotonic()
        with pytest.raises(WaitTimeout, match=f"run {slow.id} of slow is still"):
            client.wait(slow.id, timeout=0.5)
        assert 0.4 < time.monotonic() - began < 5
        with pytest.raises(BadInput, match="timeout"):
            client.wait(slow.id, timeout=-1)
        shown = run_cli("runs", "show", str(fits.id), "-c", str(config), "--json")
        assert json.loads(shown.stdout)["result"] == "x" * 9_000
        human = run_cli("runs", "show", str(opaque.id), "-c", str(config))
        assert "result not kept" in human.stdout
    finally:
        client.close()
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_async_wait_is_woken_by_the_outcome_not_a_poll(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    config = write_config(tmp_path / "jr.toml", db_url, JOBS)
    proc = workers.start(config)

    async def scenario() -> list[float]:
        client = AsyncClient.from_url(db_url)
        try:
            took = []
            for _ in range(10):
                run = await client.enqueue("echo-async", {"value": 7})
                began = time.monotonic()
                done = await client.wait(run.id, timeout=30)
                took.append(time.monotonic() - began)
                assert done.result == 7
            return took
        finally:
            await client.close()

    took = asyncio.run(scenario())
    # LISTEN/NOTIFY: well under the 1 s poll each time
    assert sorted(took)[len(took) // 2] < 0.5, took
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_runs_retry_re_drives_one_run_or_a_selection_and_dry_run_writes_nothing(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    jobs = [{"name": "boom", "func": "sysjobs:fail"}, {"name": "echo", "func": "sysjobs:returns"}]
    config = write_config(tmp_path / "jr.toml", db_url, jobs)
    proc = workers.start(config)
    client = Client.from_url(db_url)
    try:
        failed = [client.wait(client.enqueue("boom").id, timeout=30) for _ in range(3)]
        ok = client.wait(client.enqueue("echo").id, timeout=30)
        assert {r.status for r in failed} == {"failed"}
        cfg = ("-c", str(config))
        dry = run_cli("runs", "retry", "--job", "boom", "--since", "1h", "--dry-run", *cfg)
        assert dry.returncode == 0 and "3 run(s) would be queued" in dry.stdout, dry.stderr
        assert len(client.list_runs(job="boom")) == 3
        one = run_cli("runs", "retry", str(failed[0].id), *cfg)
        assert one.returncode == 0 and f"retrying run {failed[0].id}" in one.stdout
        again = client.wait(failed[0].id, timeout=30)
        assert (again.retry_of, again.attempt, again.status) == (failed[0].id, 2, "failed")
        bulk = run_cli("runs", "retry", "--job", "boom", "--json", *cfg)
        queued = json.loads(bulk.stdout)
        assert sorted(r["retry_of"] for r in queued) == sorted(
            [again.id, failed[1].id, failed[2].id]
        )
        shown = run_cli("runs", "show", str(queued[0]["id"]), "--json", *cfg)
        assert json.loads(shown.stdout)["retry_of"] == queued[0]["retry_of"]
        for bad, said in (
            ((str(ok.id),), "cannot be retried"),
            (("--job", "boom", "--status", "succeeded"), "--status"),
            ((), "give a run id or --job"),
            (("--job", "nope"), "nope"),
            (("999999",), "999999"),
        ):
            done = run_cli("runs", "retry", *bad, *cfg)
            assert done.returncode == 2 and said in done.stderr, (bad, done.stderr)
    finally:
        client.close()
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0


@pytest.mark.parametrize("db_url", ["postgresql", "sqlite"], indirect=True)
def test_kwargs_are_checked_against_the_published_parameters_everywhere(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    """The worker publishes each job's parameters; the client, the CLI and `jobs show`
    use them without importing job code."""
    jobs = [{"name": "typed", "func": "sysjobs:typed", "kwargs": {"region": "us"}}]
    config = write_config(tmp_path / "jr.toml", db_url, jobs)
    proc = workers.start(config)
    client = Client.from_url(db_url)
    cfg = ("-c", str(config))
    try:
        for kwargs, said in (
            ({}, "needs the parameter 'user_id' (integer)"),
            ({"user_id": "7"}, "parameter 'user_id' must be integer"),
            ({"user_id": 7, "usr": 1}, "no parameter 'usr'"),
            ({"user_id": 7, "tags": [1]}, "'tags' must be list of string or null"),
        ):
            with pytest.raises(InvalidArguments) as info:
                client.enqueue("typed", kwargs)
            assert said in str(info.value), info.value
            done = run_cli("jobs", "trigger", "typed", "--kwargs", json.dumps(kwargs), *cfg)
            assert done.returncode == 2 and said in done.stderr, done.stderr
        with pytest.raises(InvalidArguments, match=r"kwargs_list\[1\]"):
            client.enqueue_many("typed", [{"user_id": 1}, {"user_id": "x"}])
        assert client.list_runs() == []
        assert client.wait(client.enqueue("typed", {"user_id": 7}).id, timeout=30).result == 7
        shown = run_cli("jobs", "show", "typed", *cfg)
        assert shown.returncode == 0, shown.stderr
        assert (
            'typed(user_id: integer, region: string = "eu", tags: list of string or null = null)'
            in shown.stdout
        )
        assert '{"region": "us"}' in shown.stdout
    finally:
        client.close()
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0
