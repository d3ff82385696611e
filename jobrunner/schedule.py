"""Cron schedules evaluated in a job's IANA zone, as pure functions of explicit instants.

Nothing here reads the clock: every function takes the instants it reasons about, and every
fire time it returns is a timezone-aware UTC ``datetime``, strictly increasing, without
duplicates.

Syntax: 5 fields ``minute hour day month weekday`` with an optional 6th field for seconds that
comes last (croniter's convention: ``"* * * * * */10"`` is every 10 seconds, while
``"*/10 * * * * *"`` is every second of every tenth minute), or one of the aliases in
``ALIASES``. ``@reboot``, a 7th (year) field and croniter's random or hashed fields
(``R``, ``H``) are rejected: a slot must be the same on every replica.

How fire times are found: croniter walks *naive* wall-clock times (plain calendar arithmetic,
no DST heuristics), and this module maps each wall time to instants in the job's zone with the
classic cron rules of DESIGN.md, "Time and DST":

- Fixed-time jobs (the hour field is a number, list or range; ``@daily``, ``@weekly``,
  ``@monthly``, ``@yearly``): a wall time skipped by a spring-forward fires once, at the first
  instant after the gap (Europe/Berlin 2026-03-29 ``"30 2 * * *"`` fires at 03:00+02:00 =
  01:00Z); several skipped wall times collapse into that one fire. A wall time that occurs
  twice on a fall-back day fires once, at its first occurrence (Berlin 2026-10-25
  ``"30 2 * * *"`` fires at 02:30+02:00 = 00:30Z only).
- Interval jobs (the hour field is ``*`` or contains a step ``/``; ``@hourly``): they follow
  elapsed time, so a repeated wall time fires in both passes (Berlin 2026-10-25
  ``"0 * * * *"`` fires at 02:00+02:00 = 00:00Z and 02:00+01:00 = 01:00Z) and a skipped wall
  time does not fire at all.

croniter 7's own zone-aware walk is not used: it shifts skipped times to the end of the gap
even for step-hour jobs (``"0 */2 * * *"`` gets a manufactured 03:00 in Berlin) and returns
both passes of a repeated wall time for fixed jobs.
"""

from __future__ import annotations

import copy
import functools
import heapq
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice, takewhile
from typing import TypeVar
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, CroniterError, croniter

T = TypeVar("T")

__all__ = ["ALIASES", "Schedule", "next_fire_times", "validate_cron"]

ALIASES: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day", "1-31, L, nW"),
    ("month", "1-12, jan-dec"),
    ("weekday", "0-7, sun-sat, d#n, dL"),
    ("second", "0-59"),
)
_EXPECTED = (
    "expected 5 fields 'minute hour day month weekday' plus an optional 6th field for seconds,"
    f" or one of {', '.join(ALIASES)}"
)
_RANDOM_FIELD = re.compile(r"^[hr](\(|/|$)", re.IGNORECASE)
_PROBE = datetime(2000, 1, 1)  # any wall time: croniter only needs a start to parse and probe


def validate_cron(expr: str) -> None:
    """Raise ValueError with a one-line message if `expr` is not a cron spec jobrunner runs."""
    _normalize(expr)


@functools.lru_cache(maxsize=4096)  # a spec is checked with croniter field by field: once
def _normalize(expr: str) -> str:
    """Return the 5- or 6-field form of `expr` (aliases expanded), or raise ValueError."""
    text = " ".join(expr.split())
    if text.startswith("@"):
        if text.lower() in ALIASES:
            return ALIASES[text.lower()]
        raise ValueError(f"unsupported cron alias {text!r}: {_EXPECTED}")
    fields = text.split()
    if len(fields) not in (5, 6):
        what = "is empty" if not fields else f"has {len(fields)} fields"
        raise ValueError(f"cron expression {expr!r} {what}: {_EXPECTED}")
    for index, value in enumerate(fields):
        name, allowed = _FIELDS[index]
        if _RANDOM_FIELD.match(value):
            raise ValueError(
                f"cron expression {expr!r}: {name} field {value!r} is random or hashed, which"
                f" replicas would not agree on; {_EXPECTED}"
            )
        probe = ["*"] * len(fields)
        probe[index] = value
        if _croniter_error(" ".join(probe)):
            raise ValueError(
                f"cron expression {expr!r}: {name} field {value!r} is invalid"
                f" (allowed {allowed}, with *, a-b, a,b and /step); {_EXPECTED}"
            )
    if problem := _croniter_error(text):
        raise ValueError(f"cron expression {expr!r} is invalid ({problem}); {_EXPECTED}")
    return text


def _croniter_error(text: str) -> str | None:
    """croniter's complaint about `text` on one line, or None if it parses and ever fires."""
    try:
        croniter(text, _PROBE, ret_type=datetime).get_next(datetime)
    except CroniterBadDateError:
        return "it never fires"
    except (CroniterError, KeyError, IndexError) as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _offset(tz: ZoneInfo, seconds: int) -> timedelta | None:
    return datetime.fromtimestamp(seconds, tz).utcoffset()


def _gap_end(tz: ZoneInfo, before: int, after: int) -> int:
    """The first instant in (before, after] that has the offset of `after`: the end of a gap."""
    offset = _offset(tz, after)
    while after - before > 1:
        middle = (before + after) // 2
        if _offset(tz, middle) == offset:
            after = middle
        else:
            before = middle
    return after


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron spec in a zone: immutable, safe to share; every method takes aware datetimes.

    Construction validates `cron` (ValueError, as `validate_cron`) and parses it once.
    """

    cron: str
    tz: ZoneInfo
    _walker: croniter[datetime] = field(init=False, repr=False, compare=False)
    _interval: bool = field(init=False, repr=False, compare=False)
    # Answers already computed (see `of`), bounded: (method, arguments) -> result.
    _memo: dict[tuple[object, ...], object] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = _normalize(self.cron)
        hour = text.split()[1]
        object.__setattr__(self, "_walker", croniter(text, _PROBE, ret_type=datetime))
        object.__setattr__(self, "_interval", hour == "*" or "/" in hour)
        object.__setattr__(self, "_memo", {})

    @staticmethod
    def of(cron: str, tz: ZoneInfo) -> Schedule:
        """The one shared `Schedule` of `cron` in `tz`.

        Jobs with the same spec share it, and with it the answers it has computed: 10,000
        jobs `* * * * *` ask for the same next fire time after the same slot, and croniter
        took about a second of CPU per replica to answer each of them anew, at the minute.
        """
        return _shared(cron, tz)

    def _remember(self, key: tuple[object, ...], compute: Callable[[], T]) -> T:
        memo = self._memo
        value = memo.get(key, _MISSING)
        if value is not _MISSING:
            return value  # type: ignore[return-value]
        value = compute()
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[key] = value
        return value

    @property
    def is_interval(self) -> bool:
        """True for elapsed-time jobs (hour field ``*`` or a step), False for fixed-hour ones."""
        return self._interval

    def next_after(self, at: datetime) -> datetime:
        """The first fire time strictly after the aware instant `at`, in UTC."""
        _require_aware(at, "at")
        return self._remember(("next", at), lambda: self._next_after(at))

    def _next_after(self, at: datetime) -> datetime:
        for seconds in self._walk(at, forward=True):
            return _utc(seconds)
        raise ValueError(f"{self.cron!r} has no fire time after {at.isoformat()}")

    def between(self, start: datetime, end: datetime, limit: int | None = None) -> list[datetime]:
        """Fire times t with start < t <= end, in UTC, ascending.

        With `limit`, only the newest `limit` of them: they are found by walking backwards from
        `end`, so the cost is proportional to `limit`, not to the number of slots in the window
        (a year of per-second slots is cheap). Without `limit`, every slot is built.
        """
        _require_aware(start, "start")
        _require_aware(end, "end")
        key = ("between", start, end, limit)
        return list(self._remember(key, lambda: tuple(self._between(start, end, limit))))

    def _between(self, start: datetime, end: datetime, limit: int | None) -> list[datetime]:
        if limit is None:
            stop = end.timestamp()
            return [_utc(s) for s in takewhile(lambda s: s <= stop, self._walk(start, True))]
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        floor = start.timestamp()
        newest = list(islice(takewhile(lambda s: s > floor, self._walk(end, False)), limit))
        return [_utc(s) for s in reversed(newest)]

    def count_between(self, start: datetime, end: datetime, cap: int) -> int:
        """How many fire times lie in (start, end], counting no further than `cap`."""
        _require_aware(start, "start")
        _require_aware(end, "end")
        if cap < 0:
            raise ValueError(f"cap must be >= 0, got {cap}")
        stop = end.timestamp()
        return sum(1 for _ in islice(takewhile(lambda s: s <= stop, self._walk(start, True)), cap))

    def _walk(self, at: datetime, forward: bool) -> Iterator[int]:
        """POSIX seconds of the fire times after `at` ascending, or at/before it descending."""
        bound = at.timestamp()
        last: int | None = None
        for seconds in self._ordered(self._start_wall(at, forward), forward):
            if seconds != last and (seconds > bound if forward else seconds <= bound):
                last = seconds
                yield seconds

    def _start_wall(self, at: datetime, forward: bool) -> datetime:
        """The wall time to walk from so that no fire time on the wanted side of `at` is missed.

        Inside a repeated hour a wall time can fire up to one fold length on the other side of
        `at` (its other pass), so the walk starts that much earlier (or later).
        """
        wall = at.astimezone(self.tz).replace(tzinfo=None, fold=0, microsecond=0)
        first, second = (int(wall.replace(tzinfo=self.tz, fold=f).timestamp()) for f in (0, 1))
        fold = timedelta(seconds=max(0, second - first))
        return wall - fold if forward else wall + fold + timedelta(seconds=1)

    def _ordered(self, wall: datetime, forward: bool) -> Iterator[int]:
        """Fire times of the walls after (before) `wall`, in walk order, possibly repeated.

        Walls come in order, but the second pass of a repeated wall time comes after the first
        pass of the following ones, so it waits in a small heap until nothing can precede it.
        """
        sign = 1 if forward else -1
        pending: list[int] = []
        for matched in self._walls(wall, forward):
            keys = [sign * seconds for seconds in self._resolve(matched)]
            for key in keys:
                heapq.heappush(pending, key)
            while keys and pending and pending[0] <= min(keys):
                yield sign * heapq.heappop(pending)
        while pending:
            yield sign * heapq.heappop(pending)

    def _walls(self, wall: datetime, forward: bool) -> Iterator[datetime]:
        """Naive wall times matching the cron spec, strictly after (before) `wall`."""
        walker = copy.copy(self._walker)
        walker.set_current(wall, force=True)
        while True:
            try:
                yield walker.get_next(datetime) if forward else walker.get_prev(datetime)
            except (ValueError, OverflowError):  # no more dates, or past datetime's range
                return

    def _resolve(self, wall: datetime) -> tuple[int, ...]:
        """POSIX seconds at which the naive wall time `wall` fires (the rules of the module)."""
        first = int(wall.replace(tzinfo=self.tz, fold=0).timestamp())
        second = int(wall.replace(tzinfo=self.tz, fold=1).timestamp())
        if first == second:
            return (first,)
        if first < second:  # a repeated wall time: `first` is its first pass
            return (first, second) if self._interval else (first,)
        # a skipped wall time: fold=0 reads it with the offset before the gap, so `first` lies
        # after the gap's end and `second` before it
        return () if self._interval else (_gap_end(self.tz, second, first),)


_MEMO_SIZE = 64  # answers kept per schedule; a scheduler pass asks a handful
_MISSING = object()


@functools.lru_cache(maxsize=4096)
def _shared(cron: str, tz: ZoneInfo) -> Schedule:
    return Schedule(cron, tz)


def next_fire_times(cron: str, tz: ZoneInfo, after: datetime, n: int) -> list[datetime]:
    """The first `n` fire times of `cron` in `tz` strictly after the aware instant `after`, UTC."""
    _require_aware(after, "after")
    return [_utc(s) for s in islice(Schedule(cron, tz)._walk(after, forward=True), n)]
