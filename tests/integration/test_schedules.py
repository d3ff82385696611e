"""Runtime schedules through the client and the store, on both databases: settings checked
as the config's (nothing written on a refusal), changes versioned, and the planner's slots
recorded through the slot ledger with one row per (job, schedule key, slot)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from jobrunner import AsyncClient, Client, InvalidArguments, JobNotFound, ScheduleNotFound
from jobrunner.config import JobConfig
from jobrunner.errors import ScheduleExists
from jobrunner.records import CatalogEntry, Policy
from jobrunner.signature import parameters_of
from jobrunner.worker.planner import AHEAD, plan_schedule
from tests.support import AllPorts


def digest(ctx: Any, user_id: int, hour: int = 9) -> None:
    """The signature published for the job `digest` (never run here)."""


JOB = JobConfig(name="digest", func="app:digest", overlap="forbid", retries=1)


def published(url: str) -> AllPorts:
    """A store of `url` whose catalog holds the job `digest`, as a starting worker's."""
    s = AllPorts.from_url(url)
    entry = CatalogEntry(
        name="digest",
        cron=None,
        timezone="Europe/Berlin",
        config_hash="h",
        definition={"name": "digest"},
        parameters=parameters_of(digest),
    )
    s.publish_catalog([entry], worker_id="w1")
    return s


@pytest.fixture
def store(db_url: str) -> Iterator[AllPorts]:
    s = published(db_url)
    yield s
    s.close()


@pytest.fixture
def client(store: AllPorts, db_url: str) -> Iterator[Client]:
    with Client.from_url(db_url) as c:
        yield c


def count(store: AllPorts, table: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_create_stores_the_schedule_with_its_next_fire_time(client: Client) -> None:
    made = client.create_schedule("digest", "0 9 * * 1", key="user-42", kwargs={"user_id": 42})
    assert (made.job_name, made.key, made.status, made.version) == (
        "digest",
        "user-42",
        "active",
        1,
    )
    assert made.kwargs == {"user_id": 42} and made.timezone is None
    assert made.next_fire_at is not None
    local = made.next_fire_at.astimezone(ZoneInfo("Europe/Berlin"))  # the job's zone
    assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)
    other = client.create_schedule(
        "digest", "0 9 * * 1", key="user-7", timezone="America/New_York", kwargs={"user_id": 7}
    )
    assert other.next_fire_at is not None
    assert other.next_fire_at.astimezone(ZoneInfo("America/New_York")).hour == 9
    assert [s.key for s in client.list_schedules("digest")] == ["user-42", "user-7"]
    assert client.get_schedule("digest", "user-7").timezone == "America/New_York"


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"job": "nope"}, JobNotFound),
        ({"cron": "61 * * * *"}, "cron: "),
        ({"timezone": "Europe/Berln"}, "did you mean 'Europe/Berlin'"),
        ({"catch_up": "some"}, "catch_up: expected one of 'skip'"),
        ({"overlap": "queue"}, "overlap: expected one of 'forbid'"),
        ({"key": ""}, "key: invalid value ''"),
        ({"key": "a b"}, "allowed letters, digits"),
        ({"kwargs": {"user_id": "x"}}, "'user_id' must be integer"),
        ({"kwargs": {"usr_id": 1}}, "did you mean 'user_id'"),
        ({"kwargs": {}}, "needs the parameter 'user_id'"),
        ({"kwargs": {"user_id": float("nan")}}, "JSON"),
        ({"kwargs": ["user_id"]}, "expected a table"),
    ],
)
def test_bad_settings_are_refused_as_the_config_refuses_them(
    client: Client, store: AllPorts, given: dict[str, Any], said: Any
) -> None:
    call = {"job": "digest", "cron": "* * * * *", "key": "k", "kwargs": {"user_id": 1}} | given
    job = call.pop("job")
    if isinstance(said, str):
        with pytest.raises(InvalidArguments) as info:
            client.create_schedule(job, **call)
        assert said in str(info.value), info.value
    else:
        with pytest.raises(said):
            client.create_schedule(job, **call)
    assert count(store, "jobrunner_schedules") == 0, "nothing may be written"


def test_changes_are_versioned_and_a_deleted_key_can_be_made_again(client: Client) -> None:
    client.create_schedule("digest", "0 9 * * *", key="u1", kwargs={"user_id": 1})
    with pytest.raises(InvalidArguments, match="already"):
        client.create_schedule("digest", "0 8 * * *", key="u1", kwargs={"user_id": 1})
    changed = client.update_schedule("digest", "u1", cron="30 7 * * *", timezone="UTC")
    assert (changed.cron, changed.timezone, changed.version) == ("30 7 * * *", "UTC", 2)
    assert changed.next_fire_at is not None and changed.next_fire_at.minute == 30
    with pytest.raises(InvalidArguments, match="unknown setting 'crn': did you mean 'cron'"):
        client.update_schedule("digest", "u1", crn="* * * * *")  # type: ignore[call-arg]
    with pytest.raises(InvalidArguments, match="must be integer"):
        client.update_schedule("digest", "u1", kwargs={"user_id": "one"})
    assert client.get_schedule("digest", "u1").version == 2, "a refused change writes nothing"
    assert client.pause_schedule("digest", "u1").status == "paused"
    assert client.resume_schedule("digest", "u1").version == 4
    gone = client.delete_schedule("digest", "u1")
    assert (gone.status, gone.next_fire_at, gone.version) == ("deleted", None, 5)
    assert client.list_schedules() == []
    assert [s.status for s in client.list_schedules(ended=True)] == ["deleted"]
    with pytest.raises(ScheduleNotFound, match="it was deleted"):
        client.update_schedule("digest", "u1", cron="* * * * *")
    with pytest.raises(ScheduleNotFound):
        client.pause_schedule("digest", "nobody")
    again = client.create_schedule("digest", "* * * * *", key="u1", kwargs={"user_id": 1})
    assert (again.status, again.version) == ("active", 6)


def plan(store: AllPorts, now: datetime) -> int:
    return store.plan_schedules(
        ["digest"], now + AHEAD, 100, lambda row: plan_schedule(JOB, row, now)
    )


def test_planned_slots_are_one_row_per_schedule_and_slot(client: Client, store: AllPorts) -> None:
    for user in (1, 2):
        client.create_schedule("digest", "* * * * * *", key=f"u{user}", kwargs={"user_id": user})
    now = store.now()
    assert plan(store, now) == 2
    runs = store.list_runs(limit=100)
    by_key: dict[str, list[datetime]] = {}
    for run in runs:
        by_key.setdefault(run.schedule_key, []).append(run.scheduled_for)  # type: ignore[arg-type]
        assert run.trigger == "schedule" and run.schedule_version == 1
        assert run.kwargs == {"user_id": int(run.schedule_key[1:])}
        assert run.max_attempts == 2  # the job's retries
    assert set(by_key) == {"u1", "u2"} and sorted(by_key["u1"]) == sorted(by_key["u2"])
    assert 1 <= len(by_key["u1"]) <= 3
    assert plan(store, now) == 0, "the cursors moved on: nothing is due again"
    # Another planner (a peer) planning the same slots writes nothing more.
    row = client.get_schedule("digest", "u1")
    again = store.insert_slots(plan_schedule(JOB, row, now - timedelta(seconds=2))[0])
    assert again == 0
    assert store.slot_cursors(["digest"]) == {}, "TOML cursors ignore runtime schedules"


def test_a_change_withdraws_the_slots_recorded_ahead(client: Client, store: AllPorts) -> None:
    client.create_schedule("digest", "* * * * * *", key="u1", kwargs={"user_id": 1})
    now = store.now()
    plan(store, now)
    ahead = [r for r in store.list_runs(limit=100) if r.scheduled_for and r.scheduled_for > now]
    assert ahead and all(r.schedule_version == 1 for r in ahead)
    client.update_schedule("digest", "u1", kwargs={"user_id": 9})
    left = store.list_runs(limit=100)
    assert all(r.scheduled_for <= store.now() for r in left if r.scheduled_for)  # type: ignore[operator]
    assert plan(store, store.now()) == 1
    newer = [r for r in store.list_runs(limit=100) if r.schedule_version == 2]
    assert newer and all(r.kwargs == {"user_id": 9} for r in newer)


def test_a_paused_schedule_records_its_slots_skipped(client: Client, store: AllPorts) -> None:
    client.create_schedule("digest", "* * * * * *", key="u1", kwargs={"user_id": 1})
    client.pause_schedule("digest", "u1")
    plan(store, store.now())
    runs = store.list_runs(limit=100)
    assert runs and {(r.status, r.reason) for r in runs} == {("skipped", "paused")}


def test_overlap_is_per_schedule(client: Client, store: AllPorts) -> None:
    """Two schedules of a forbid job fire at the same instants: each slot starts, neither
    skips the other (their leases are per schedule)."""
    for user in (1, 2):
        client.create_schedule("digest", "* * * * * *", key=f"u{user}", kwargs={"user_id": user})
    client.update_schedule("digest", "u2", overlap="allow")
    now = store.now()
    plan(store, now)
    first = min(r.scheduled_for for r in store.list_runs(limit=100) if r.scheduled_for)
    when = max(first - datetime.now(UTC), timedelta(0)).total_seconds()
    policies = {"digest": Policy(overlap="forbid", misfire_grace=60)}
    import time

    time.sleep(when + 0.05)
    claim = store.claim(worker_id="w", limit=10, policies=policies, lease_ttl=30)
    started = {c.run.schedule_key for c in claim.started if c.run.scheduled_for == first}
    assert started == {"u1", "u2"}
    keys = {c.run.schedule_key: c.lease.key for c in claim.started if c.run.scheduled_for == first}
    assert keys == {"u1": "\x1eu1", "u2": ""}  # forbid: its own lane; allow: the job's


def test_bulk_create_is_all_or_nothing_and_reuses_ended_keys(
    client: Client, store: AllPorts
) -> None:
    specs = [{"key": f"u{i}", "cron": "0 9 * * *", "kwargs": {"user_id": i}} for i in range(50)]
    specs[7] = {**specs[7], "timezone": "Asia/Tokyo", "overlap": "allow"}
    assert client.create_schedules("digest", specs) == 50
    rows = {s.key: s for s in client.list_schedules("digest")}
    assert len(rows) == 50 and rows["u7"].timezone == "Asia/Tokyo"
    assert rows["u7"].overlap == "allow" and rows["u3"].kwargs == {"user_id": 3}
    tokyo = rows["u7"].next_fire_at.astimezone(ZoneInfo("Asia/Tokyo"))  # type: ignore[union-attr]
    assert tokyo.hour == 9
    for bad, said in (
        ([{"key": "n1", "cron": "0 9 * * *", "kwargs": {"user_id": 1}}, {"key": "n2"}], "[1]"),
        ([{"key": "n1", "cron": "0 9 * * *", "kwargs": {"user_id": "x"}}], "must be integer"),
        ([{"key": "n1", "cron": "bad", "kwargs": {"user_id": 1}}], "cron"),
        ([{"key": "n1", "cron": "0 9 * * *", "kwargs": {"user_id": 1}}] * 2, "given twice"),
    ):
        with pytest.raises(InvalidArguments) as info:
            client.create_schedules("digest", bad)
        assert said in str(info.value), info.value
    before = count(store, "jobrunner_schedules")
    clash = [{"key": "new", "cron": "* * * * *", "kwargs": {"user_id": 1}}, specs[3]]
    with pytest.raises(ScheduleExists, match="'u3'"):
        client.create_schedules("digest", clash)
    assert count(store, "jobrunner_schedules") == before, "nothing was created"
    client.delete_schedule("digest", "u3")
    assert client.create_schedules("digest", clash) == 2
    assert client.get_schedule("digest", "u3").version == 3  # created, deleted, made again
    with pytest.raises(JobNotFound):
        client.create_schedules("nope", specs[:1])


def test_the_async_client_has_every_schedule_method(pg_url: str) -> None:
    published(pg_url).close()

    async def scenario() -> None:
        async with AsyncClient.from_url(pg_url) as client:
            made = await client.create_schedule(
                "digest", "0 9 * * *", key="a", kwargs={"user_id": 1}
            )
            assert made.version == 1
            specs = [
                {"key": f"b{i}", "cron": "0 9 * * *", "kwargs": {"user_id": i}} for i in (1, 2)
            ]
            assert await client.create_schedules("digest", specs) == 2
            with pytest.raises(InvalidArguments, match="must be integer"):
                await client.update_schedule("digest", "a", kwargs={"user_id": "x"})
            assert (await client.update_schedule("digest", "a", cron="0 8 * * *")).version == 2
            assert (await client.pause_schedule("digest", "a")).status == "paused"
            assert (await client.resume_schedule("digest", "a")).status == "active"
            assert (await client.delete_schedule("digest", "b1")).status == "deleted"
            assert [s.key for s in await client.list_schedules("digest")] == ["a", "b2"]
            assert (await client.get_schedule("digest", "b1")).status == "deleted"
            with pytest.raises(ScheduleNotFound):
                await client.pause_schedule("digest", "b1")

    asyncio.run(scenario())


def test_a_resume_plans_the_slots_that_were_recorded_paused(
    client: Client, store: AllPorts
) -> None:
    client.create_schedule("digest", "* * * * * *", key="u1", kwargs={"user_id": 1})
    client.pause_schedule("digest", "u1")
    plan(store, store.now())
    assert {r.reason for r in store.list_runs(limit=100)} == {"paused"}
    resumed = client.resume_schedule("digest", "u1")
    assert plan(store, store.now()) == 1
    ahead = [r for r in store.list_runs(limit=100) if r.scheduled_for > store.now()]  # type: ignore[operator]
    assert ahead and all(r.status == "queued" for r in ahead)
    assert all(r.schedule_version == resumed.version for r in ahead)


def test_a_delete_cancels_what_waits_and_a_pause_skips_it(client: Client, store: AllPorts) -> None:
    """Slots due but unclaimed (a backlog, a jitter) and queued retries do not run after
    the schedule ends; at a pause its due slots are recorded skipped."""
    for key in ("a", "b"):
        client.create_schedule("digest", "* * * * * *", key=key, kwargs={"user_id": 1})
    since = store.now() - timedelta(minutes=5)
    for key in ("a", "b"):
        missing, _ = store.backfill(
            "digest", key, since, since + timedelta(seconds=3), dry_run=False
        )
        assert len(missing) >= 3
    client.delete_schedule("digest", "a")
    client.pause_schedule("digest", "b")
    runs = store.list_runs(limit=100)
    assert {(r.status, r.reason) for r in runs if r.schedule_key == "a"} == {
        ("cancelled", "schedule deleted")
    }
    assert {(r.status, r.reason) for r in runs if r.schedule_key == "b"} == {("skipped", "paused")}
