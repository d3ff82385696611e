"""Property tests of schedules: random cron specs x IANA zones with DST x years, each over a
window around one of that year's transitions, against the DESIGN.md rules applied minute by
minute (`reference`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_schedule import fires, reference

ZONES = [
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Santiago",  # southern hemisphere, transitions at midnight
    "America/Havana",  # DST at midnight: the wall day itself moves
    "America/St_Johns",  # half-hour offset
    "Australia/Lord_Howe",  # a 30-minute DST step
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Tehran",  # DST until 2022, none after
    "Africa/Casablanca",  # negative DST around Ramadan
]


def transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    """The UTC days (midnight) in `year` before which the zone's offset changed."""
    days = [datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=d) for d in range(366)]
    offsets = [d.astimezone(zone).utcoffset() for d in days]
    return [
        day
        for day, before, after in zip(days[1:], offsets, offsets[1:], strict=False)
        if before != after
    ]


def number(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(str)


def field(low: int, high: int, steps: int) -> st.SearchStrategy[str]:
    """A cron field: *, */n, a number, a list of two, or a range."""
    return st.one_of(
        st.just("*"),
        st.integers(2, steps).map(lambda n: f"*/{n}"),
        number(low, high),
        st.lists(st.integers(low, high), min_size=2, max_size=3, unique=True).map(
            lambda xs: ",".join(map(str, sorted(xs)))
        ),
        st.tuples(st.integers(low, high), st.integers(low, high))
        .filter(lambda ab: ab[0] < ab[1])
        .map(lambda ab: f"{ab[0]}-{ab[1]}"),
    )


CRONS = st.tuples(
    field(0, 59, 30).filter(lambda m: m != "*"),  # at most every 2 minutes: keep windows fast
    field(0, 23, 12),
    st.sampled_from(["*", "*", "1-15", "*/2"]),
    st.sampled_from(["*", "mon-fri", "sun", "sat,sun"]),
).map(lambda parts: f"{parts[0]} {parts[1]} {parts[2]} * {parts[3]}")


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is not a lottery
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    cron=CRONS,
    zone=st.sampled_from(ZONES),
    year=st.integers(2000, 2037),
    pick=st.integers(0, 10),
    shift=st.integers(-24, 0),
)
def test_random_schedules_follow_the_dst_rules(
    cron: str, zone: str, year: int, pick: int, shift: int
) -> None:
    tz = ZoneInfo(zone)
    days = transitions(tz, year)
    if days:
        start = days[pick % len(days)] - timedelta(days=1) + timedelta(hours=shift)
    else:  # a year without DST in that zone: any day
        start = datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=pick * 30)
    end = start + timedelta(days=2)
    interval = cron.split()[1].startswith("*")  # the hour field: * or a step
    got = fires(cron, tz, start, end)
    assert got == reference(cron, tz, interval, start, end, timedelta(minutes=1))
    assert all(a < b for a, b in pairwise(got))
