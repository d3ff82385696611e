"""Runtime schedules' slots: planned as a TOML schedule's (DST rules, catch-up) with the
schedule's own cron, zone, kwargs and overrides; pure functions of an explicit `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from jobrunner.config import JobConfig
from jobrunner.errors import InvalidArguments
from jobrunner.records import CatalogEntry, ScheduleRow
from jobrunner.runtime import check_changes, check_concurrency_key, check_key, effective_job
from jobrunner.worker.planner import AHEAD, RETRY_BROKEN, SchedulePlanner, plan_schedule

BERLIN = ZoneInfo("Europe/Berlin")
JOB = JobConfig(
    name="digest",
    func="app:digest",
    timezone=BERLIN,
    retries=2,
    catch_up="all",
    misfire_grace=timedelta(days=3),
    kwargs={"hour": 9},
)


def row(cron: str, cursor: datetime, **over: Any) -> ScheduleRow:
    values: dict[str, Any] = {
        "job_name": "digest",
        "key": "u1",
        "cron": cron,
        "timezone": None,
        "kwargs": {"user_id": 1},
        "catch_up": None,
        "overlap": None,
        "status": "active",
        "status_note": None,
        "version": 3,
        "cursor": cursor,
        "next_fire_at": None,
        "created_at": cursor,
        "updated_at": cursor,
    }
    return ScheduleRow(**{**values, **over})


def local(slots: list[Any], tz: ZoneInfo = BERLIN) -> list[str]:
    return [s.scheduled_for.astimezone(tz).strftime("%m-%d %H:%M %Z") for s in slots]


def test_a_fixed_time_fires_once_on_both_dst_days_in_the_jobs_zone() -> None:
    spring = datetime(2026, 3, 28, 12, tzinfo=UTC)  # Berlin skips 02:00-03:00 on 03-29
    slots, _ = plan_schedule(JOB, row("30 2 * * *", spring), spring + timedelta(days=2))
    assert local(slots) == ["03-29 03:00 CEST", "03-30 02:30 CEST"]
    autumn = datetime(2026, 10, 24, 12, tzinfo=UTC)  # 02:00-03:00 happens twice on 10-25
    slots, _ = plan_schedule(JOB, row("30 2 * * *", autumn), autumn + timedelta(days=2))
    assert local(slots) == ["10-25 02:30 CEST", "10-26 02:30 CET"]


def test_an_interval_fires_in_both_passes_of_a_repeated_hour() -> None:
    autumn = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)  # 02:00 CEST
    slots, _ = plan_schedule(JOB, row("*/30 * * * *", autumn), autumn + timedelta(hours=2))
    assert local(slots) == [
        "10-25 02:30 CEST",
        "10-25 02:00 CET",
        "10-25 02:30 CET",
        "10-25 03:00 CET",
    ]


def test_the_schedules_zone_overrides_the_jobs() -> None:
    start = datetime(2026, 3, 7, 12, tzinfo=UTC)  # New York springs forward on 03-08
    york = ZoneInfo("America/New_York")
    sched = row("30 2 * * *", start, timezone="America/New_York")
    slots, nxt = plan_schedule(JOB, sched, start + timedelta(days=2))
    assert local(slots, york) == ["03-08 03:00 EDT", "03-09 02:30 EDT"]
    assert nxt.astimezone(york).strftime("%m-%d %H:%M") == "03-10 02:30"


def test_slots_carry_the_schedules_key_version_kwargs_and_overlap() -> None:
    now = datetime(2026, 1, 5, 12, 0, 0, 500_000, tzinfo=UTC)
    sched = row("* * * * * *", now - timedelta(seconds=1), overlap="replace")
    slots, nxt = plan_schedule(JOB, sched, now)
    assert [s.scheduled_for for s in slots] == [
        datetime(2026, 1, 5, 12, 0, i, tzinfo=UTC) for i in range(3)
    ]  # up to now + AHEAD (2 s)
    assert timedelta(seconds=2) == AHEAD and nxt == datetime(2026, 1, 5, 12, 0, 3, tzinfo=UTC)
    for s in slots:
        assert (s.schedule_key, s.schedule_version, s.overlap) == ("u1", 3, "replace")
        assert s.kwargs == {"user_id": 1} and s.max_attempts == 3 and s.status == "queued"


def test_a_paused_schedule_records_skipped_slots_and_catch_up_is_its_own() -> None:
    now = datetime(2026, 1, 5, 12, tzinfo=UTC)
    paused, _ = plan_schedule(JOB, row("0 * * * *", now - timedelta(hours=3), status="paused"), now)
    assert [(s.status, s.reason) for s in paused] == [("skipped", "paused")] * 3
    missed, _ = plan_schedule(JOB, row("0 * * * *", now - timedelta(hours=3)), now)
    assert [s.reason for s in missed] == ["catch-up", "catch-up", None]  # the job's "all"
    skipped, _ = plan_schedule(
        JOB, row("0 * * * *", now - timedelta(hours=3, minutes=1), catch_up="skip"), now
    )
    assert [(s.status, s.reason) for s in skipped] == [("skipped", "misfired")] * 3 + [
        ("queued", None)
    ]


def test_the_effective_job_merges_kwargs_and_keeps_the_jobs_other_settings() -> None:
    job = effective_job(JOB, row("0 9 * * *", datetime(2026, 1, 1, tzinfo=UTC)))
    assert job.kwargs == {"hour": 9, "user_id": 1} and job.retries == 2
    assert job.timezone == BERLIN and job.cron == "0 9 * * *"


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"cron": "* * *"}, "cron: "),
        ({"cron": 5}, "cron: expected a string"),
        ({"timezone": "Nowhere/City"}, "unknown time zone"),
        ({"overlap": "never"}, "expected one of 'forbid', 'allow', 'replace'"),
        ({"kwargs": {"x": {1, 2}}}, "JSON"),
        ({"crons": "* * * * *"}, "did you mean 'cron'"),
    ],
)
def test_settings_are_refused_with_the_configs_messages(changes: Any, said: str) -> None:
    with pytest.raises(InvalidArguments) as info:
        check_changes("digest", "u1", changes)
    assert said in str(info.value) and "schedule 'u1' of job 'digest'" in str(info.value)


@pytest.mark.parametrize("key", ["", "a/b", "-x", "a" * 200, 7, None, "tab\there"])
def test_keys_are_refused_with_what_a_key_may_be(key: Any) -> None:
    with pytest.raises(InvalidArguments, match="key: "):
        check_key("digest", key)


def test_a_key_of_199_characters_and_a_cron_of_200_are_the_most() -> None:
    assert check_key("digest", "k" * 199) == "k" * 199
    with pytest.raises(InvalidArguments, match="at most 200 characters"):
        check_changes("digest", "u1", {"cron": "0 " + ",".join(["1"] * 120) + " * * *"})
    with pytest.raises(InvalidArguments, match="unknown setting 7"):
        check_changes("digest", "u1", {7: "x"})


def test_a_job_with_a_concurrency_key_needs_its_value_in_the_schedules_kwargs() -> None:
    entry = CatalogEntry(
        name="sync", cron=None, timezone="UTC", config_hash="h",
        definition={"concurrency_key": "tenant", "kwargs": {"region": "eu"}},
    )  # fmt: skip
    check_concurrency_key(entry, "u1", {"tenant": "t-1"})
    with pytest.raises(InvalidArguments, match="must hold 'tenant'"):
        check_concurrency_key(entry, "u1", {"region": "us"})
    with pytest.raises(InvalidArguments, match="at most 200 characters"):
        check_concurrency_key(entry, "u1", {"tenant": "t" * 201})


def test_a_schedule_that_cannot_be_planned_here_never_stops_the_others() -> None:
    """A zone this host's tzdata lacks (or any other error of one row) is logged and the row
    is looked at again later; the planner's pass goes on with the rest."""
    planner = SchedulePlanner([JOB], None, None, None, None)  # type: ignore[arg-type]
    now = datetime(2026, 1, 5, 12, tzinfo=UTC)
    plan = planner.planner(now, AHEAD)
    broken = row("* * * * *", now, timezone="Nowhere/Atlantis")
    assert plan(broken) == ([], now + RETRY_BROKEN)
    slots, _ = plan(row("* * * * * *", now))
    assert len(slots) == 2
