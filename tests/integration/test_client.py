"""The clients for web apps: `Client` on SQLite and PostgreSQL, `AsyncClient` on PostgreSQL.

Both run the same operations (jobrunner.store.queue, .history, .catalog), so the same checks
apply to both.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from jobrunner import (
    AsyncClient,
    Client,
    InvalidArguments,
    JobNotFound,
    Run,
    RunNotFound,
)
from jobrunner.errors import BadInput
from jobrunner.records import CatalogEntry, Policy
from jobrunner.signature import parameters_of
from jobrunner.store.queue import NOTIFY_CHANNEL
from tests.support import AllPorts


def publish(url: str, *names: str, retries: int = 0) -> None:
    """Put jobs in the catalog as a starting worker does."""
    store = AllPorts.from_url(url)
    try:
        store.publish_catalog(
            [
                CatalogEntry(
                    name=n,
                    cron=None,
                    timezone="UTC",
                    config_hash=f"hash-{n}",
                    definition={"name": n, "retries": retries},
                )
                for n in names
            ],
            worker_id="w1",
        )
    finally:
        store.close()


def start_run(url: str, job: str) -> int:
    """Claim the oldest due run of `job` as a worker would; returns its id (now running)."""
    store = AllPorts.from_url(url)
    try:
        claim = store.claim(worker_id="w1", limit=1, policies={job: Policy()}, lease_ttl=30)
        assert len(claim.started) == 1
        return claim.started[0].run.id
    finally:
        store.close()


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    publish(db_url, "report", "other", retries=2)
    with Client.from_url(db_url) as c:
        yield c


# -- sync client: SQLite and PostgreSQL -----------------------------------------------------


def test_enqueue_returns_a_queued_run_with_the_catalogued_retries(client: Client) -> None:
    run = client.enqueue("report", {"region": "eu"}, correlation_id="req-1")
    assert isinstance(run, Run)
    assert (run.job_name, run.status, run.trigger, run.attempt) == ("report", "queued", "manual", 1)
    assert run.max_attempts == 3  # retries = 2 in the catalog
    assert run.kwargs == {"region": "eu"} and run.correlation_id == "req-1"
    assert run.run_at.tzinfo is not None and run.scheduled_for is None
    assert client.get_run(run.id) == run


@pytest.mark.parametrize(
    "kwargs",
    [
        {"f": object()},
        {"nan": math.nan},
        {1: "non-string key"},
        ["not", "a", "mapping"],
        "text",
    ],
)
def test_enqueue_refuses_arguments_that_are_not_a_json_object(client: Client, kwargs: Any) -> None:
    with pytest.raises(InvalidArguments):
        client.enqueue("report", kwargs)
    assert client.list_runs() == [], "nothing may be written"


def typed(ctx: Any, user_id: int, region: str = "eu", tags: list[str] | None = None) -> None:
    """The signature a worker publishes for the job `typed` (never run here)."""


def test_checking_kwargs_imports_nothing_a_client_names(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guarantee 9: kwargs are checked against the JSON the worker published; a module a
    client names (as a value, a parameter name, a job name) is never imported, even though
    it is importable here, and a bad call is refused."""
    probe = f"jr_probe_{uuid.uuid4().hex[:10]}"
    marker = tmp_path / "imported"
    (tmp_path / f"{probe}.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef run(): 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    store = AllPorts.from_url(db_url)
    entry = CatalogEntry(
        name="typed",
        cron=None,
        timezone="UTC",
        config_hash="h",
        definition={"name": "typed"},
        parameters=parameters_of(typed),
    )
    store.publish_catalog([entry], worker_id="w1")
    store.close()
    named = f"{probe}:run"
    with Client.from_url(db_url) as c:
        for kwargs in (
            {"user_id": named},
            {"user_id": 1, named: 1},
            {"user_id": 1, "tags": [named, probe], "region": 3},
            {"user_id": {"__import__": probe}},
        ):
            with pytest.raises(InvalidArguments):
                c.enqueue("typed", kwargs)
        with pytest.raises(JobNotFound):
            c.enqueue(named, {})
        assert c.list_runs() == []
        run = c.enqueue("typed", {"user_id": 1, "region": named, "tags": [probe]})
        assert run.kwargs == {"user_id": 1, "region": named, "tags": [probe]}
    assert probe not in sys.modules and not marker.exists()
    importlib.import_module(probe)  # the probe itself works: importing it leaves its mark
    assert marker.exists()
    sys.modules.pop(probe, None)


def test_enqueue_refuses_an_unknown_job_and_a_naive_run_at(client: Client) -> None:
    with pytest.raises(JobNotFound, match="'nope'"):
        client.enqueue("nope", {})
    with pytest.raises(BadInput, match="timezone-aware"):
        client.enqueue("report", run_at=datetime(2030, 1, 1))
    assert client.list_runs() == []


def test_an_unknown_enqueue_option_is_refused_naming_the_allowed_ones(client: Client) -> None:
    with pytest.raises(TypeError, match=r"'run_att': did you mean 'run_at'.*idempotency_key"):
        client.enqueue("report", {}, run_att=None)  # type: ignore[call-arg]
    allowed = (
        r"allowed: run_at, correlation_id, priority, concurrency_key, traceparent, "
        r"idempotency_keys$"
    )
    with pytest.raises(
        TypeError, match=r"'idempotency_key': did you mean 'idempotency_keys'.*" + allowed
    ):
        client.enqueue_many("report", [{}], idempotency_key="k")  # type: ignore[call-arg]
    assert client.list_runs() == []


def test_idempotency_key_returns_the_first_run_per_job(client: Client) -> None:
    first = client.enqueue("report", {"n": 1}, idempotency_key="k")
    again = client.enqueue("report", {"n": 2}, idempotency_key="k")
    assert again.id == first.id and again.kwargs == {"n": 1}
    assert first == again == client.get_run(first.id)  # the record returned is the row
    assert client.enqueue("other", idempotency_key="k").id != first.id  # keys are per job
    assert len(client.list_runs()) == 2


def test_run_at_delays_the_run(client: Client) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    run = client.enqueue("report", run_at=later)
    assert abs((run.run_at - later).total_seconds()) < 0.001
    assert client.get_run(run.id) == run


def test_list_runs_filters_newest_first(client: Client) -> None:
    a = client.enqueue("report", correlation_id="c1")
    b = client.enqueue("other", correlation_id="c2")
    c = client.enqueue("report", correlation_id="c1")
    client.cancel_run(a.id)
    assert [r.id for r in client.list_runs()] == [c.id, b.id, a.id]
    assert [r.id for r in client.list_runs(job="report")] == [c.id, a.id]
    assert [r.id for r in client.list_runs(status="cancelled")] == [a.id]
    assert [r.id for r in client.list_runs(correlation_id="c1", limit=1)] == [c.id]
    with pytest.raises(BadInput, match="unknown status 'bogus'"):
        client.list_runs(status="bogus")
    with pytest.raises(BadInput, match="limit"):
        client.list_runs(limit=0)


def test_list_and_get_jobs(client: Client) -> None:
    assert [j.name for j in client.list_jobs()] == ["other", "report"]
    job = client.get_job("report")
    assert job.config_hash == "hash-report" and not job.paused
    with pytest.raises(JobNotFound):
        client.get_job("nope")


def test_cancel_queued_at_once_running_by_request_finished_unchanged(
    client: Client, db_url: str
) -> None:
    queued = client.enqueue("report")
    cancelled = client.cancel_run(queued.id)
    assert (cancelled.status, cancelled.reason) == ("cancelled", "cancelled by request")
    assert cancelled.finished_at is not None

    client.enqueue("other")
    running_id = start_run(db_url, "other")
    flagged = client.cancel_run(running_id)
    assert flagged.status == "running" and flagged.cancel_requested  # the worker acts on it

    assert client.cancel_run(queued.id) == cancelled  # a second cancel changes nothing
    with pytest.raises(RunNotFound, match="99999"):
        client.cancel_run(99999)
    with pytest.raises(RunNotFound):
        client.get_run(99999)


def test_a_client_built_on_an_engine_leaves_it_open(db_url: str) -> None:
    publish(db_url, "report")
    engine = AllPorts.from_url(db_url).engine
    with Client(engine) as c:
        c.enqueue("report")
    with engine.connect() as conn:  # still usable: the caller owns it
        assert conn.execute(sa.text("SELECT count(*) FROM job_runs")).scalar_one() == 1
    engine.dispose()


def test_enqueue_many_queues_one_run_per_element_in_order(client: Client) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    ids = client.enqueue_many("report", [{"n": 1}, None, {"n": 3}], correlation_id="bulk")
    assert len(ids) == 3 and ids == sorted(ids)
    runs = [client.get_run(i) for i in ids]
    assert [r.kwargs for r in runs] == [{"n": 1}, {}, {"n": 3}]
    assert {(r.status, r.trigger, r.attempt, r.max_attempts, r.correlation_id) for r in runs} == {
        ("queued", "manual", 1, 3, "bulk")
    }
    (delayed,) = client.enqueue_many("other", [{}], run_at=later)
    assert abs((client.get_run(delayed).run_at - later).total_seconds()) < 1e-3
    assert client.enqueue_many("report", []) == []


def test_enqueue_many_is_all_or_nothing_and_names_the_bad_element(client: Client) -> None:
    before = len(client.list_runs(limit=1000))
    with pytest.raises(InvalidArguments, match=r"kwargs_list\[1\]"):
        client.enqueue_many("report", [{"ok": 1}, {"bad": math.nan}])
    with pytest.raises(JobNotFound):
        client.enqueue_many("nope", [{}, {}])
    with pytest.raises(BadInput):
        client.enqueue_many("report", [{}], run_at=datetime(2030, 1, 1))
    assert len(client.list_runs(limit=1000)) == before


def test_enqueue_many_wakes_listeners_once(pg_url: str) -> None:
    publish(pg_url, "report")
    with psycopg.connect(
        sa.make_url(pg_url)
        .render_as_string(hide_password=False)
        .replace("postgresql+psycopg", "postgresql"),
        autocommit=True,
    ) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        with Client.from_url(pg_url) as c:
            c.enqueue_many("report", [{"i": i} for i in range(50)])
        notes = list(listener.notifies(timeout=2, stop_after=2))
    assert [n.payload for n in notes] == ["report"]


# -- async client: PostgreSQL -------------------------------------------------------------


def test_async_client_behaves_like_the_sync_client(pg_url: str) -> None:
    publish(pg_url, "report", "other", retries=1)

    async def scenario() -> None:
        async with AsyncClient.from_url(pg_url) as ac:
            run = await ac.enqueue("report", {"x": 1}, correlation_id="c1")
            assert (run.status, run.max_attempts, run.kwargs) == ("queued", 2, {"x": 1})
            with Client.from_url(pg_url) as sync:
                assert sync.get_run(run.id) == run  # the same rows, the same records
            assert await ac.get_run(run.id) == run
            with pytest.raises(JobNotFound):
                await ac.enqueue("nope")
            with pytest.raises(InvalidArguments):
                await ac.enqueue("report", {"bad": {1, 2}})
            with pytest.raises(RunNotFound):
                await ac.get_run(424242)
            with pytest.raises(BadInput):
                await ac.list_runs(status="bogus")
            other = await ac.enqueue("other", correlation_id="c2")
            assert [r.id for r in await ac.list_runs()] == [other.id, run.id]
            assert [r.id for r in await ac.list_runs(job="report")] == [run.id]
            assert [r.id for r in await ac.list_runs(correlation_id="c2")] == [other.id]
            assert [j.name for j in await ac.list_jobs()] == ["other", "report"]
            assert (await ac.get_job("other")).config_hash == "hash-other"
            bulk = await ac.enqueue_many("report", [{}, {"y": 2}])
            assert [(await ac.get_run(i)).kwargs for i in bulk] == [{}, {"y": 2}]
            with pytest.raises(JobNotFound):
                await ac.enqueue_many("nope", [{}])
            with pytest.raises(TypeError, match="'priorty'"):
                await ac.enqueue("report", priorty=3)  # type: ignore[call-arg]
            cancelled = await ac.cancel_run(run.id)
            assert cancelled.status == "cancelled"
            assert [r.id for r in await ac.list_runs(status="cancelled")] == [run.id]
            running_id = start_run(pg_url, "other")
            assert (await ac.cancel_run(running_id)).cancel_requested

    asyncio.run(scenario())


def test_async_idempotent_enqueues_racing_get_one_run(pg_url: str) -> None:
    publish(pg_url, "report")

    async def scenario() -> set[int]:
        async with AsyncClient.from_url(pg_url, pool_size=10) as ac:
            runs = await asyncio.gather(
                *(ac.enqueue("report", {"i": i}, idempotency_key="once") for i in range(10))
            )
            assert len(await ac.list_runs()) == 1
            return {r.id for r in runs}

    assert len(asyncio.run(scenario())) == 1


def test_async_enqueue_wakes_listening_workers(pg_url: str) -> None:
    """Enqueue sends NOTIFY (workers LISTEN): the shared statements include it."""
    publish(pg_url, "report")
    with psycopg.connect(
        sa.make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False),
        autocommit=True,
    ) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")

        async def enqueue() -> None:
            async with AsyncClient.from_url(pg_url) as ac:
                await ac.enqueue("report")

        asyncio.run(enqueue())
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert payloads == ["report"]


def test_async_client_needs_postgresql(sqlite_url: str) -> None:
    with pytest.raises(BadInput, match="PostgreSQL"):
        AsyncClient.from_url(sqlite_url)


def test_async_client_on_an_existing_engine_leaves_it_open(pg_url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    publish(pg_url, "report")

    async def scenario() -> int:
        engine = create_async_engine(sa.make_url(pg_url).set(drivername="postgresql+psycopg"))
        async with AsyncClient(engine) as ac:
            await ac.enqueue("report")
        async with engine.connect() as conn:
            count = (await conn.execute(sa.text("SELECT count(*) FROM job_runs"))).scalar_one()
        await engine.dispose()
        return int(count)

    assert asyncio.run(scenario()) == 1


def test_async_client_through_pgbouncer_in_transaction_mode(pgbouncer_url: str) -> None:
    """`?prepared_statements=false` reaches the async engine too: no prepared statement is
    kept across transactions (psycopg prepares a query after its 5th execution)."""
    publish(pgbouncer_url, "report")

    async def scenario() -> int:
        async with AsyncClient.from_url(pgbouncer_url, pool_size=2) as ac:
            async with ac.engine.connect() as conn:
                raw = await conn.get_raw_connection()
                assert raw.driver_connection.prepare_threshold is None  # type: ignore[union-attr]
            for i in range(12):
                run = await ac.enqueue("report", {"i": i})
                assert (await ac.get_run(run.id)).kwargs == {"i": i}
            return len(await ac.list_runs(limit=100))

    assert asyncio.run(scenario()) == 12
