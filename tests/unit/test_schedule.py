"""Cron schedules: syntax, zones and the DST rules of DESIGN.md "Time and DST".

Every test passes explicit instants in real zones; nothing reads or freezes the clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from jobrunner.schedule import ALIASES, Schedule, next_fire_times, validate_cron

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
# 2026 transitions used below:
#   Berlin      spring 03-29 01:00Z (02:00 -> 03:00), fall 10-25 01:00Z (03:00 -> 02:00)
#   New York    spring 03-08 07:00Z (02:00 -> 03:00), fall 11-01 06:00Z (02:00 -> 01:00)
#   Lord Howe   fall 04-04 15:00Z (02:00 -> 01:30), spring 10-03 15:30Z (02:00 -> 02:30)


DAY = timedelta(days=1)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def local(
    tz: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, fold: int = 0
) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=tz, fold=fold)


def fires(cron: str, tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    return Schedule(cron, tz).between(start, end)


def reference(
    cron: str, tz: ZoneInfo, interval: bool, start: datetime, end: datetime, step: timedelta
) -> list[datetime]:
    """The DESIGN.md rules applied literally to every `step` instant in (start, end]."""
    walls: set[datetime] = set()
    walker = croniter(cron, start.astimezone(tz).replace(tzinfo=None) - DAY)
    while (wall := walker.get_next(datetime)) <= end.astimezone(tz).replace(tzinfo=None) + DAY:
        walls.add(wall)
    out = []
    instant = start + step
    while instant <= end:
        here = instant.astimezone(tz)
        wall = here.replace(tzinfo=None)
        # wall times a gap ending at `instant` jumped over (none unless a gap ends here)
        skipped = (instant - timedelta(seconds=1)).astimezone(tz).replace(tzinfo=None)
        skipped += timedelta(seconds=1)
        in_gap = any(skipped + k * step in walls for k in range((wall - skipped) // step))
        if (wall in walls and (interval or here.fold == 0)) or (not interval and in_gap):
            out.append(instant)
        instant += step
    return out


# --- syntax ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "*/15 * * * *",
        "0 9 * * mon-fri",
        "30 2 * * *",
        "* * * * * */10",
        "0 0 L * *",
        "0 0 * * sun#2",
        "  0   9 * * *  ",
        "@daily",
        "@HOURLY",
    ],
)
def test_validate_accepts(expr: str) -> None:
    validate_cron(expr)


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("@reboot", "unsupported cron alias '@reboot'"),
        ("@every 5m", "unsupported cron alias"),
        ("* * * *", "has 4 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("61 * * * *", "minute field '61' is invalid (allowed 0-59"),
        ("* 24 * * *", "hour field '24' is invalid (allowed 0-23"),
        ("* * 32 * *", "day field '32' is invalid"),
        ("* * * 13 *", "month field '13' is invalid"),
        ("* * * * 8", "weekday field '8' is invalid"),
        ("* * * * * 60", "second field '60' is invalid"),
        ("*/0 * * * *", "minute field '*/0' is invalid"),
        ("a * * * *", "minute field 'a' is invalid"),
        ("R * * * *", "minute field 'R' is random or hashed"),
        ("0 H * * *", "hour field 'H' is random or hashed"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_validate_rejects_with_one_line_message(expr: str, complaint: str) -> None:
    with pytest.raises(ValueError) as caught:
        validate_cron(expr)
    message = str(caught.value)
    assert complaint in message
    assert "\n" not in message
    assert "'minute hour day month weekday'" in message
    assert "@hourly" in message


def test_schedule_validates_on_construction() -> None:
    with pytest.raises(ValueError, match="minute field '61'"):
        Schedule("61 * * * *", BERLIN)


@pytest.mark.parametrize(("alias", "expanded"), sorted(ALIASES.items()))
def test_alias_fires_like_its_expansion(alias: str, expanded: str) -> None:
    start, end = utc(2026, 1, 1), utc(2028, 1, 1)
    aliased = Schedule(alias, BERLIN)
    assert aliased.between(start, end, limit=30) == fires(expanded, BERLIN, start, end)[-30:]
    assert aliased.is_interval == (alias == "@hourly")


def test_alias_instants() -> None:
    at = utc(2026, 5, 1)
    assert Schedule("@daily", BERLIN).next_after(at) == utc(2026, 5, 1, 22)
    assert Schedule("@weekly", BERLIN).next_after(at) == utc(2026, 5, 2, 22)  # Sun 3 May 00:00
    assert Schedule("@monthly", NEW_YORK).next_after(at) == utc(2026, 5, 1, 4)
    assert Schedule("@yearly", BERLIN).next_after(at) == utc(2026, 12, 31, 23)


@pytest.mark.parametrize(
    ("expr", "interval"),
    [
        ("*/15 * * * *", True),
        ("0 * * * *", True),
        ("0 */2 * * *", True),
        ("0 1-23/2 * * *", True),
        ("* * * * * */10", True),
        ("30 2 * * *", False),
        ("0 1,13 * * *", False),
        ("0 9-17 * * mon-fri", False),
        ("*/5 3 * * *", False),
    ],
)
def test_is_interval_follows_the_hour_field(expr: str, interval: bool) -> None:
    assert Schedule(expr, BERLIN).is_interval is interval


def test_schedule_is_a_frozen_value() -> None:
    schedule = Schedule("0 9 * * *", BERLIN)
    assert schedule == Schedule("0 9 * * *", BERLIN)
    assert len({schedule, Schedule("0 9 * * *", BERLIN)}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.cron = "0 10 * * *"  # type: ignore[misc]


# --- plain fire times --------------------------------------------------------------------------


def test_next_after_is_strictly_after_and_utc() -> None:
    schedule = Schedule("0 9 * * *", BERLIN)
    slot = utc(2026, 1, 15, 8)
    assert schedule.next_after(slot - timedelta(microseconds=1)) == slot
    after = schedule.next_after(slot)
    assert after == utc(2026, 1, 16, 8)
    assert after.tzinfo is UTC


def test_next_after_accepts_any_aware_zone() -> None:
    schedule = Schedule("0 9 * * *", BERLIN)
    at = utc(2026, 1, 15, 7, 59)
    assert schedule.next_after(at.astimezone(NEW_YORK)) == schedule.next_after(at)


def test_sixth_field_is_seconds_every_ten() -> None:
    got = fires("* * * * * */10", BERLIN, utc(2026, 5, 1, 12), utc(2026, 5, 1, 12, 1))
    assert got == [utc(2026, 5, 1, 12, 0, 10) + timedelta(seconds=10 * k) for k in range(6)]


def test_sixth_field_seconds_come_last_so_a_leading_step_is_minutes() -> None:
    # croniter's convention: "*/10 * * * * *" is every second of every tenth minute
    got = fires("*/10 * * * * *", BERLIN, utc(2026, 5, 1, 12, 0, 57), utc(2026, 5, 1, 12, 10, 1))
    assert got == [
        utc(2026, 5, 1, 12, 0, 58),
        utc(2026, 5, 1, 12, 0, 59),
        utc(2026, 5, 1, 12, 10, 0),
        utc(2026, 5, 1, 12, 10, 1),
    ]


def test_sixth_field_comes_last() -> None:
    assert Schedule("0 9 * * * 30", BERLIN).next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 8, 0, 30)


def test_each_job_has_its_own_zone() -> None:
    at = utc(2026, 1, 15)
    assert Schedule("0 9 * * *", BERLIN).next_after(at) == utc(2026, 1, 15, 8)
    assert Schedule("0 9 * * *", NEW_YORK).next_after(at) == utc(2026, 1, 15, 14)
    assert Schedule("0 9 * * *", LORD_HOWE).next_after(at) == utc(2026, 1, 15, 22)  # +11:00
    assert Schedule("0 9 * * *", LORD_HOWE).next_after(utc(2026, 6, 1)) == utc(2026, 6, 1, 22, 30)


def test_next_fire_times() -> None:
    got = next_fire_times("*/15 * * * *", NEW_YORK, utc(2026, 5, 1, 12, 7), 3)
    assert got == [utc(2026, 5, 1, 12, 15), utc(2026, 5, 1, 12, 30), utc(2026, 5, 1, 12, 45)]
    assert next_fire_times("*/15 * * * *", NEW_YORK, utc(2026, 5, 1), 0) == []


# --- fixed-time jobs across DST ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "cron", "day", "expected"),
    [
        (BERLIN, "30 2 * * *", (2026, 3, 29), utc(2026, 3, 29, 1)),  # 03:00+02:00
        (NEW_YORK, "30 2 * * *", (2026, 3, 8), utc(2026, 3, 8, 7)),  # 03:00-04:00
        (LORD_HOWE, "15 2 * * *", (2026, 10, 4), utc(2026, 10, 3, 15, 30)),  # 02:30+11:00
    ],
)
def test_fixed_job_in_spring_gap_fires_once_after_the_gap(
    tz: ZoneInfo, cron: str, day: tuple[int, int, int], expected: datetime
) -> None:
    midnight = datetime(*day, tzinfo=tz)
    got = fires(cron, tz, midnight, midnight + DAY)
    assert got == [expected]


def test_fixed_job_around_the_gap_keeps_its_wall_time() -> None:
    got = fires("30 2 * * *", BERLIN, utc(2026, 3, 27), utc(2026, 3, 31))
    assert [t.astimezone(BERLIN).strftime("%d %H:%M%z") for t in got] == [
        "27 02:30+0100",
        "28 02:30+0100",
        "29 03:00+0200",
        "30 02:30+0200",
    ]


def test_skipped_wall_times_collapse_into_one_fire() -> None:
    day = fires("*/15 2 * * *", BERLIN, local(BERLIN, 2026, 3, 29), local(BERLIN, 2026, 3, 30))
    assert day == [utc(2026, 3, 29, 1)]
    both = fires("0,30 2,3 * * *", BERLIN, local(BERLIN, 2026, 3, 29), local(BERLIN, 2026, 3, 30))
    assert both == [utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 30)]  # 03:00 and 03:30


@pytest.mark.parametrize(
    ("tz", "cron", "day", "expected"),
    [
        (BERLIN, "30 2 * * *", (2026, 10, 25), utc(2026, 10, 25, 0, 30)),  # 02:30+02:00
        (NEW_YORK, "30 1 * * *", (2026, 11, 1), utc(2026, 11, 1, 5, 30)),  # 01:30-04:00
        (LORD_HOWE, "45 1 * * *", (2026, 4, 5), utc(2026, 4, 4, 14, 45)),  # 01:45+11:00
    ],
)
def test_fixed_job_in_repeated_hour_fires_once_at_first_pass(
    tz: ZoneInfo, cron: str, day: tuple[int, int, int], expected: datetime
) -> None:
    midnight = datetime(*day, tzinfo=tz)
    assert fires(cron, tz, midnight, midnight + DAY) == [expected]


def test_fixed_job_next_after_from_inside_the_second_pass() -> None:
    second_pass = local(BERLIN, 2026, 10, 25, 2, 10, fold=1)  # 01:10Z
    assert Schedule("30 2 * * *", BERLIN).next_after(second_pass) == utc(2026, 10, 26, 1, 30)


def test_fixed_job_newest_slot_seen_from_inside_the_second_pass() -> None:
    end = local(BERLIN, 2026, 10, 25, 2, 10, fold=1)  # 01:10Z, after the 00:30Z first pass
    got = Schedule("30 2 * * *", BERLIN).between(utc(2026, 10, 20), end, limit=1)
    assert got == [utc(2026, 10, 25, 0, 30)]


# --- interval jobs across DST ------------------------------------------------------------------


def test_hourly_job_fires_in_both_passes_of_the_repeated_hour() -> None:
    got = fires("0 * * * *", BERLIN, utc(2026, 10, 24, 22, 30), utc(2026, 10, 25, 3))
    assert got == [utc(2026, 10, 24, 23) + timedelta(hours=k) for k in range(5)]
    walls = [t.astimezone(BERLIN).strftime("%H:%M%z") for t in got]
    assert walls == ["01:00+0200", "02:00+0200", "02:00+0100", "03:00+0100", "04:00+0100"]


def test_quarter_hour_job_keeps_elapsed_time_through_fall_back() -> None:
    got = fires("*/15 * * * *", BERLIN, utc(2026, 10, 24, 23, 50), utc(2026, 10, 25, 2))
    assert got == [utc(2026, 10, 25, 0) + timedelta(minutes=15 * k) for k in range(9)]


def test_seconds_job_crosses_fall_back_without_a_hole_or_a_repeat() -> None:
    got = fires("* * * * * */10", BERLIN, utc(2026, 10, 25, 0, 59, 30), utc(2026, 10, 25, 1, 0, 30))
    assert got == [utc(2026, 10, 25, 0, 59, 40) + timedelta(seconds=10 * k) for k in range(6)]


def test_interval_job_has_no_slots_in_the_skipped_hour() -> None:
    hourly = fires("0 * * * *", BERLIN, utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 2))
    assert hourly == [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)]  # 01,03,04
    half_past = fires("30 * * * *", BERLIN, utc(2026, 3, 28, 23, 45), utc(2026, 3, 29, 2))
    assert half_past == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30)]  # 01:30, 03:30


def test_step_hour_job_gets_no_manufactured_slot_after_the_gap() -> None:
    # croniter 7 alone turns the skipped 02:00 of "0 */2" into an extra 03:00 fire
    got = fires("0 */2 * * *", BERLIN, utc(2026, 3, 28, 22, 30), utc(2026, 3, 29, 5))
    walls = [t.astimezone(BERLIN).strftime("%H:%M") for t in got]
    assert walls == ["00:00", "04:00", "06:00"]


def test_interval_job_across_lord_howe_half_hour_fall_back() -> None:
    got = fires("*/15 * * * *", LORD_HOWE, utc(2026, 4, 4, 14), utc(2026, 4, 4, 15, 30))
    assert got == [utc(2026, 4, 4, 14, 15) + timedelta(minutes=15 * k) for k in range(6)]
    walls = [t.astimezone(LORD_HOWE).strftime("%H:%M%z") for t in got]
    assert walls[1:5] == ["01:30+1100", "01:45+1100", "01:30+1030", "01:45+1030"]


def test_interval_job_across_lord_howe_half_hour_spring_forward() -> None:
    got = fires("*/15 * * * *", LORD_HOWE, utc(2026, 10, 3, 14, 40), utc(2026, 10, 3, 15, 50))
    walls = [t.astimezone(LORD_HOWE).strftime("%H:%M%z") for t in got]
    assert walls == ["01:15+1030", "01:30+1030", "01:45+1030", "02:30+1100", "02:45+1100"]
    assert got[3] - got[2] == timedelta(minutes=15)


def test_interval_next_after_from_inside_the_first_pass_finds_the_second() -> None:
    first_pass = local(BERLIN, 2026, 10, 25, 2, 10)  # 00:10Z
    assert Schedule("0 * * * *", BERLIN).next_after(first_pass) == utc(2026, 10, 25, 1)


# --- against the rules applied literally -------------------------------------------------------

CASES = [
    (BERLIN, "30 2 * * *", False, (2026, 3, 28)),
    (BERLIN, "*/20 2,3 * * *", False, (2026, 10, 24)),
    (BERLIN, "0,30 * * * *", True, (2026, 3, 28)),
    (BERLIN, "*/20 */2 * * *", True, (2026, 10, 24)),
    (NEW_YORK, "*/30 1-3 * * *", False, (2026, 11, 1)),
    (NEW_YORK, "15 * * * *", True, (2026, 3, 7)),
    (LORD_HOWE, "*/10 1,2 * * *", False, (2026, 4, 4)),
    (LORD_HOWE, "*/10 1,2 * * *", False, (2026, 10, 3)),
    (LORD_HOWE, "5,35 * * * *", True, (2026, 4, 4)),
    (LORD_HOWE, "*/15 * * * *", True, (2026, 10, 3)),
]


CASE_IDS = [f"{tz.key}-{cron}-{day[1]:02}{day[2]:02}" for tz, cron, _, day in CASES]


@pytest.mark.parametrize(("tz", "cron", "interval", "day"), CASES, ids=CASE_IDS)
def test_matches_the_rules_applied_minute_by_minute(
    tz: ZoneInfo, cron: str, interval: bool, day: tuple[int, int, int]
) -> None:
    start = datetime(*day, tzinfo=tz).astimezone(UTC)
    end = start + timedelta(days=2)
    got = fires(cron, tz, start, end)
    assert got == reference(cron, tz, interval, start, end, timedelta(minutes=1))
    assert all(t.tzinfo is UTC for t in got)
    assert all(a < b for a, b in pairwise(got))


def test_seconds_job_matches_the_rules_second_by_second() -> None:
    start, end = utc(2026, 4, 4, 14, 30), utc(2026, 4, 4, 15, 30)  # Lord Howe fall back
    got = fires("* * * * * */7", LORD_HOWE, start, end)
    assert got == reference("* * * * * */7", LORD_HOWE, True, start, end, timedelta(seconds=1))


@pytest.mark.parametrize(("tz", "cron", "interval", "day"), CASES, ids=CASE_IDS)
def test_between_with_limit_is_the_tail_of_between(
    tz: ZoneInfo, cron: str, interval: bool, day: tuple[int, int, int]
) -> None:
    schedule = Schedule(cron, tz)
    start = datetime(*day, tzinfo=tz).astimezone(UTC)
    for hours in range(1, 49, 1):
        end = start + timedelta(hours=hours, minutes=10)
        full = schedule.between(start, end)
        for limit in (1, 3, len(full), len(full) + 5):
            assert schedule.between(start, end, limit=limit) == full[-limit:]


@pytest.mark.parametrize(("tz", "cron", "interval", "day"), CASES, ids=CASE_IDS)
def test_next_after_agrees_with_between(
    tz: ZoneInfo, cron: str, interval: bool, day: tuple[int, int, int]
) -> None:
    schedule = Schedule(cron, tz)
    start = datetime(*day, tzinfo=tz).astimezone(UTC)
    for minutes in range(0, 2 * 24 * 60, 7):
        at = start + timedelta(minutes=minutes)
        assert schedule.next_after(at) == schedule.between(at, at + DAY)[0]


# --- windows, limits and caps ------------------------------------------------------------------


def test_between_is_half_open() -> None:
    schedule = Schedule("0 * * * *", BERLIN)
    got = schedule.between(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12))
    assert got == [utc(2026, 5, 1, 11), utc(2026, 5, 1, 12)]


def test_between_empty_or_reversed_window() -> None:
    schedule = Schedule("0 * * * *", BERLIN)
    at = utc(2026, 5, 1, 10)
    assert schedule.between(at, at) == []
    assert schedule.between(at, at - timedelta(hours=5)) == []
    assert schedule.between(at, at - timedelta(hours=5), limit=3) == []
    assert schedule.between(at, at + timedelta(hours=5), limit=0) == []


def test_between_rejects_negative_limit_and_count_negative_cap() -> None:
    schedule = Schedule("0 * * * *", BERLIN)
    with pytest.raises(ValueError, match="limit"):
        schedule.between(utc(2026, 1, 1), utc(2026, 2, 1), limit=-1)
    with pytest.raises(ValueError, match="cap"):
        schedule.count_between(utc(2026, 1, 1), utc(2026, 2, 1), cap=-1)


def test_between_with_limit_returns_the_newest_of_a_year_of_seconds() -> None:
    schedule = Schedule("* * * * * *", NEW_YORK)  # ~31.5 million slots in the window
    got = schedule.between(utc(2026, 1, 1), utc(2027, 1, 1), limit=5)
    assert got == [utc(2026, 12, 31, 23, 59, 56) + timedelta(seconds=k) for k in range(5)]


def test_count_between_stops_at_cap() -> None:
    schedule = Schedule("* * * * * *", NEW_YORK)
    assert schedule.count_between(utc(2026, 1, 1), utc(2027, 1, 1), cap=1000) == 1000
    assert schedule.count_between(utc(2026, 1, 1), utc(2026, 1, 1, 0, 1), cap=1000) == 60
    assert schedule.count_between(utc(2026, 1, 1), utc(2027, 1, 1), cap=0) == 0


def test_count_between_counts_both_passes_and_skips_the_gap() -> None:
    hourly = Schedule("0 * * * *", BERLIN)
    assert hourly.count_between(local(BERLIN, 2026, 10, 25), local(BERLIN, 2026, 10, 26), 99) == 25
    assert hourly.count_between(local(BERLIN, 2026, 3, 29), local(BERLIN, 2026, 3, 30), 99) == 23
    fixed = Schedule("30 2 * * *", BERLIN)
    assert fixed.count_between(utc(2026, 3, 1), utc(2026, 11, 1), cap=1000) == 245


# --- naive datetimes ---------------------------------------------------------------------------

NAIVE = datetime(2026, 5, 1, 12)
AWARE = utc(2026, 5, 1, 12)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.next_after(NAIVE),
        lambda s: s.between(NAIVE, AWARE),
        lambda s: s.between(AWARE, NAIVE, limit=3),
        lambda s: s.count_between(NAIVE, AWARE, cap=10),
        lambda s: next_fire_times(s.cron, s.tz, NAIVE, 3),
    ],
    ids=["next_after", "between-start", "between-end", "count_between", "next_fire_times"],
)
def test_naive_datetimes_are_rejected(call: Callable[[Schedule], object]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call(Schedule("0 * * * *", BERLIN))


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("expr", ["* * * * *", "30 2 * * *", "0 */2 * * *", "*/15 * * * * *"])
def test_shared_schedule_answers_as_a_fresh_one(expr: str, zone: str) -> None:
    """`Schedule.of` is shared by every job with the spec and remembers its answers; they
    equal a fresh schedule's, across DST days, asked again and in any order."""
    tz = ZoneInfo(zone)
    shared = Schedule.of(expr, tz)
    assert Schedule.of(" ".join(expr.split()), tz) is shared
    assert Schedule.of(expr, ZoneInfo("Asia/Tokyo")) is not shared
    starts = [
        datetime(2026, 3, 29, 0, 0, 5, tzinfo=UTC) + timedelta(minutes=37 * i) for i in range(40)
    ]
    starts += [datetime(2026, 11, 1, 4, 59, 59, tzinfo=UTC), *reversed(starts)]
    for at in starts:
        fresh = Schedule(expr, tz)
        assert shared.next_after(at) == fresh.next_after(at)
        end = at + timedelta(hours=3)
        assert shared.between(at, end, limit=5) == fresh.between(at, end, limit=5)
        assert shared.between(at, at + timedelta(minutes=5)) == fresh.between(
            at, at + timedelta(minutes=5)
        )


def test_remembered_answers_are_copies_and_bounded() -> None:
    schedule = Schedule.of("* * * * *", ZoneInfo("UTC"))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    first = schedule.between(at, at + timedelta(minutes=3))
    first.clear()  # a caller's list is its own
    assert len(schedule.between(at, at + timedelta(minutes=3))) == 3
    for minute in range(500):
        schedule.next_after(at + timedelta(minutes=minute))
    assert 0 < len(schedule._memo) <= 64
