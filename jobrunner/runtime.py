"""Schedules an app creates at runtime (`Client.create_schedule`): their settings checked as
the config checks a job's keys (the same messages), and their effective job: the job's
settings with the schedule's cron, zone, kwargs and overrides. Pure: the store keeps the
schedules, the worker plans their slots."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from jobrunner import converters as conv
from jobrunner.errors import ArgumentsTooLarge, InvalidArguments
from jobrunner.jobconfig import JobConfig, key_text
from jobrunner.policy import BACKFILL
from jobrunner.records import CatalogEntry, ScheduleRow, Slot
from jobrunner.schedule import Schedule

# No '/': a key is a URL path segment. Up to 199 characters: a schedule's lease is named
# "JOB\x1f\x1eKEY" in job_locks (401 characters at most, a job name up to 200).
KEY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,198}"
KEY_ALLOWED = "letters, digits and '_.:@+=-', starting with a letter or digit, up to 199 characters"
MAX_CRON = 200  # characters, as the column holds
MAX_SCHEDULES_LIST = 100_000


class ScheduleChanges(TypedDict, total=False):
    """What `create_schedule` sets and `update_schedule` changes (None: the job's own)."""

    cron: str
    timezone: str | None
    kwargs: Mapping[str, Any] | None
    catch_up: str | None
    overlap: str | None


def schedule_changes(
    cron: str | None,
    timezone: str | None,
    kwargs: Mapping[str, Any] | None,
    catch_up: str | None,
    overlap: str | None,
) -> ScheduleChanges:
    """The settings as `create_schedule` takes them (None: the job's own)."""
    changes: ScheduleChanges = {
        "timezone": timezone, "kwargs": kwargs, "catch_up": catch_up, "overlap": overlap,
    }  # fmt: skip
    if cron is not None:
        changes["cron"] = cron
    return changes


_CONVERT: dict[str, Any] = {
    "cron": conv.cron,
    "timezone": lambda v: conv.zone(v).key,
    "kwargs": lambda v: dict(conv.json_table(v)),
    "catch_up": conv.choice("skip", "latest", "all"),
    "overlap": conv.choice("forbid", "allow", "replace"),
}
_OPTIONAL = ("timezone", "kwargs", "catch_up", "overlap")


def check_key(job: str, key: object) -> str:
    """The schedule's key, or InvalidArguments saying what a key may be."""
    try:
        conv.job_name(job)
        return str(conv.string(KEY_PATTERN, KEY_ALLOWED)(key))
    except ValueError as exc:
        raise InvalidArguments(f"schedule of job {job!r}: key: {exc}") from None


def check_changes(job: str, key: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """`changes` converted as the config converts a job's keys (the zone by its name, kwargs
    as a dict), or InvalidArguments naming the setting and what is allowed."""
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in _CONVERT:
            close = difflib.get_close_matches(str(name), list(_CONVERT), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InvalidArguments(
                f"schedule {key!r} of job {job!r}: unknown setting {name!r}: {hint}"
                f"allowed: {', '.join(_CONVERT)}"
            )
        if value is None and name in _OPTIONAL:
            out[name] = {} if name == "kwargs" else None
            continue
        try:
            out[name] = _CONVERT[name](value)
            if name == "cron" and len(out[name]) > MAX_CRON:
                raise ValueError(f"at most {MAX_CRON} characters, got {len(out[name])}")
        except ValueError as exc:
            kind = ArgumentsTooLarge if isinstance(exc, ArgumentsTooLarge) else InvalidArguments
            raise kind(f"schedule {key!r} of job {job!r}: {name}: {exc}") from None
    return out


def check_concurrency_key(entry: CatalogEntry, key: str, kwargs: Mapping[str, Any]) -> None:
    """A job with a `concurrency_key` needs its value in the schedule's kwargs (over the
    job's own), as an enqueue does; InvalidArguments otherwise."""
    name = entry.definition.get("concurrency_key")
    if not name:
        return
    value = key_text({**entry.definition.get("kwargs", {}), **kwargs}.get(name))
    if value is None:
        raise InvalidArguments(
            f"schedule {key!r} of job {entry.name!r}: its concurrency_key is {name!r}: the "
            f"schedule's kwargs must hold {name!r} (its runs are limited per value)"
        )
    if len(value) > 200:
        raise InvalidArguments(
            f"schedule {key!r} of job {entry.name!r}: the value of {name!r} is a concurrency "
            f"key: at most 200 characters, got {len(value)}"
        )


def next_fire(cron: str, zone: str, after: datetime) -> datetime:
    """The first slot of `cron` in `zone` after `after`."""
    return Schedule.of(cron, ZoneInfo(zone)).next_after(after)


def backfill_slots(
    entry: CatalogEntry, row: ScheduleRow | None, times: Sequence[datetime], run_at: datetime
) -> list[Slot]:
    """The slots `times` of a job's TOML schedule (`row` None) or of its runtime schedule,
    queued now as a backfill: they wait for the lease instead of skipping, and never misfire."""
    d = entry.definition
    kwargs = {**d.get("kwargs", {}), **(row.kwargs if row else {})}
    ckey = d.get("concurrency_key")
    return [
        Slot(
            job_name=entry.name,
            scheduled_for=t,
            run_at=run_at,
            max_attempts=int(d.get("retries", 0)) + 1,
            reason=BACKFILL,
            priority=int(d.get("priority", 0)),
            concurrency_key=key_text(kwargs.get(ckey)) if ckey else None,
            kwargs=row.kwargs if row else {},
            schedule_key=row.key if row else "",
            schedule_version=row.version if row else None,
            overlap=row.overlap if row else None,
        )
        for t in times
    ]


def effective_job(job: JobConfig, row: ScheduleRow) -> JobConfig:
    """The job as the schedule runs it: its cron, zone, kwargs over the job's, and its
    catch-up and overlap where it sets them."""
    changes: dict[str, Any] = {
        "cron": row.cron,
        "kwargs": {**job.kwargs, **row.kwargs},
    }
    if row.timezone is not None:
        changes["timezone"] = ZoneInfo(row.timezone)
    if row.catch_up is not None:
        changes["catch_up"] = row.catch_up
    if row.overlap is not None:
        changes["overlap"] = row.overlap
    return dataclasses.replace(job, **changes)
