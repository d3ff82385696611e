"""``[[jobs]]`` entries: the job model and its loader (called by :mod:`jobrunner.config`).

Queue keys (DESIGN.md, "Interfaces, part two"): ``queue`` names the worker pool that runs the
job; ``concurrency_key`` names the kwarg whose value groups its runs, ``max_per_key`` bounds the
runs of one value at once and ``rate_limit = "N/DURATION"`` the starts in any window (per value
when a key is set). Keys added after the first release enter a job's definition only when set,
so that the definitions (and hashes) of jobs that do not use them stay what they were.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo

from jobrunner import converters as conv
from jobrunner.importing import accepts_ctx, extend_sys_path, import_func, is_async
from jobrunner.schedule import Schedule
from jobrunner.settings import UNRESOLVED, Issues, definition_of, parse_table, setting, toml_key
from jobrunner.units import describe, format_duration

UTC = ZoneInfo("UTC")
DEFAULT_QUEUE = "default"


def short_hash(payload: object) -> str:
    """16 hex digits of the SHA-256 of `payload` as canonical JSON."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """One ``[[jobs]]`` entry; ``fn`` is None when loaded with ``import_funcs=False``."""

    name: str = field(metadata=toml_key(conv.job_name, hint="a unique name like 'nightly-report'"))
    func: str = field(metadata=toml_key(conv.func_spec, hint=conv.FUNC_ALLOWED))
    cron: str | None = setting(None, conv.cron)
    timezone: ZoneInfo = setting(UTC, conv.zone)  # loaded without it: [worker] timezone
    timeout: timedelta | None = setting(None, conv.optional(conv.duration(exclusive=True)))
    retries: int = setting(0, conv.integer(0, 1_000))
    retry_backoff: timedelta = setting(timedelta(seconds=30), conv.duration())
    retry_backoff_max: timedelta = setting(timedelta(hours=1), conv.duration())
    # the loader's default: "forbid" with a cron, "allow" without (a queue)
    overlap: Literal["forbid", "allow", "replace"] = setting(
        "forbid", conv.choice("forbid", "allow", "replace")
    )
    max_concurrency: int | None = setting(None, conv.integer(1))
    priority: int = setting(0, conv.integer(*conv.PRIORITY_RANGE))  # higher runs first
    queue: str = setting(DEFAULT_QUEUE, conv.queue_name)
    concurrency_key: str | None = setting(None, conv.kwarg_name)
    max_per_key: int | None = setting(None, conv.integer(1, 10_000))
    rate_limit: str | None = setting(None, conv.rate_limit)
    # an enqueue with the kwargs of a run enqueued within this window returns that run
    unique_for: timedelta | None = setting(None, conv.optional(conv.duration(exclusive=True)))
    # the dead man's switch: an `overdue` event when no run succeeded for this long
    expect_success_within: timedelta | None = setting(
        None, conv.optional(conv.duration(exclusive=True))
    )
    catch_up: Literal["skip", "latest", "all"] = setting(
        "latest", conv.choice("skip", "latest", "all")
    )
    misfire_grace: timedelta = setting(timedelta(minutes=1), conv.duration())
    max_catch_up: int = setting(100, conv.integer(1, 100_000))
    jitter: timedelta = setting(timedelta(0), conv.duration())
    kwargs: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), metadata=toml_key(conv.json_table)
    )
    isolation: Literal["thread", "process"] = setting("thread", conv.choice("thread", "process"))
    # bytes (RLIMIT_AS of the child); only with "process"
    max_memory: int | None = setting(None, conv.memory)
    fn: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    is_async: bool = False
    accepts_ctx: bool = False

    @cached_property  # parsed once: the scheduler asks for it on every tick
    def schedule(self) -> Schedule | None:
        """The cron schedule in the job's zone, or None for a job that is only enqueued."""
        return None if self.cron is None else Schedule.of(self.cron, self.timezone)

    @cached_property
    def rate(self) -> tuple[int, float] | None:
        """``rate_limit`` as (starts, window in seconds), or None."""
        return None if self.rate_limit is None else conv.parse_rate(self.rate_limit)

    def key_of(self, kwargs: Mapping[str, Any]) -> str | None:
        """The concurrency key value of a run with these kwargs (None without a key)."""
        if self.concurrency_key is None:
            return None
        return key_text(kwargs.get(self.concurrency_key))

    def definition(self) -> dict[str, Any]:
        """Every setting as JSON-able values (durations in seconds, the zone by its key).
        Settings added later appear only when set (see the module's doc)."""
        unset = {k for k, default in _LATER_KEYS.items() if getattr(self, k) == default}
        if self.isolation == "thread":
            unset |= {"isolation", "max_memory"}
        return definition_of(self, leave_out=unset)

    @cached_property
    def definition_hash(self) -> str:
        """16 hex digits of the SHA-256 of :meth:`definition` (canonical JSON)."""
        return short_hash(self.definition())


_LATER_KEYS: dict[str, object] = {
    "priority": 0,
    "queue": DEFAULT_QUEUE,
    "concurrency_key": None,
    "max_per_key": None,
    "rate_limit": None,
    "unique_for": None,
    "expect_success_within": None,
}


def key_text(value: object) -> str | None:
    """A kwarg's value as a concurrency key: a string as it is, anything else as JSON;
    None (the kwarg is missing or null) when there is none."""
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


# --------------------------------------------------------------------------- loading


def _job_label(raw: object) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"job {name!r}: " if isinstance(name, str) and re.fullmatch(conv.NAME, name) else ""


def _check_job_rules(
    values: dict[str, Any], given: set[str], key: str, label: str, issues: Issues
) -> bool:
    """The rules between keys, over the valid `values`; for the queue keys, a key `given`
    but invalid (reported already) satisfies a rule that needs it."""
    present = {**dict.fromkeys(given & set(_LATER_KEYS), True), **values}
    results = [  # report every problem
        _check_overlap_rules(values, key, label, issues),
        _check_key_rules(present, key, label, issues),
        _check_other_rules(values, key, label, issues),
    ]
    return all(results)


def _check_overlap_rules(values: dict[str, Any], key: str, label: str, issues: Issues) -> bool:
    ok = True
    for name in ("max_concurrency", "max_per_key"):
        if values.get(name) is not None and values.get("overlap", "allow") != "allow":
            issues.add(
                f"{key}.{name}",
                f"{label}{name} only applies with overlap = 'allow', "
                f"but overlap is {values['overlap']!r}; remove it or set overlap = 'allow'",
            )
            ok = False
    return ok


def _check_key_rules(values: dict[str, Any], key: str, label: str, issues: Issues) -> bool:
    ckey = values.get("concurrency_key")
    problems: list[tuple[str, str]] = []
    if values.get("max_per_key") is not None and ckey is None:
        problems.append(
            ("max_per_key", "max_per_key needs concurrency_key (the kwarg to group by)")
        )
    if ckey is not None and values.get("max_per_key") is None and values.get("rate_limit") is None:
        problems.append(
            ("concurrency_key", "concurrency_key needs max_per_key or rate_limit (what to limit)")
        )
    if ckey is not None and values.get("max_concurrency") is not None:
        problems.append(
            (
                "max_concurrency",
                "max_concurrency limits the whole job and cannot be combined with "
                "concurrency_key; use max_per_key for a limit per key value",
            )
        )
    kwargs = values.get("kwargs", {})
    scheduled = isinstance(ckey, str) and values.get("cron") is not None
    if scheduled and isinstance(kwargs, Mapping) and key_text(kwargs.get(ckey)) is None:
        problems.append(
            (
                "concurrency_key",
                f"a scheduled job's kwargs must hold its concurrency_key {ckey!r}; "
                f'add it to kwargs, like kwargs = {{ {ckey} = "..." }}',
            )
        )
    for name, message in problems:
        issues.add(f"{key}.{name}", f"{label}{message}")
    return not problems


def _check_other_rules(values: dict[str, Any], key: str, label: str, issues: Issues) -> bool:
    ok = True
    if values.get("max_memory") is not None and values.get("isolation", "process") != "process":
        issues.add(
            f"{key}.max_memory",
            f"{label}max_memory only applies with isolation = 'process' (a thread cannot be "
            "limited), but isolation is 'thread'; remove it or set isolation = 'process'",
        )
        ok = False
    backoff, backoff_max = values.get("retry_backoff"), values.get("retry_backoff_max")
    if backoff is not None and backoff_max is not None and backoff_max < backoff:
        issues.add(
            f"{key}.retry_backoff_max",
            f"{label}must be at least retry_backoff ({format_duration(backoff)}), "
            f"got {format_duration(backoff_max)}",
        )
        ok = False
    return ok


def _import_job(
    values: dict[str, Any], key: str, label: str, paths: Sequence[Path], issues: Issues
) -> bool:
    """Import the job's function into `values` (fn, is_async, accepts_ctx); False on a
    problem (reported)."""
    try:
        fn = import_func(values["func"], paths)
    except ValueError as exc:
        issues.add(f"{key}.func", f"{label}{exc}")
        return False
    values.update(fn=fn, is_async=is_async(fn), accepts_ctx=accepts_ctx(fn))
    if values["is_async"] and values.get("isolation") == "process":
        issues.add(
            f"{key}.isolation",
            f"{label}isolation = 'process' runs plain def functions only, but "
            f"{values['func']!r} is async; remove isolation (async jobs run on the event "
            "loop and can be cancelled) or make the function a plain def",
        )
        return False
    return True


def build_job(
    raw: object, key: str, zone: ZoneInfo, paths: Sequence[Path] | None, issues: Issues
) -> JobConfig | None:
    """One ``[[jobs]]`` table as a JobConfig (None when it has problems, reported in
    `issues`); without a ``timezone`` it runs in `zone`; with `paths` its function is
    imported from them."""
    label = _job_label(raw)
    values, ok = parse_table(raw, JobConfig, key, issues, label)
    if isinstance(raw, dict) and "overlap" not in raw:  # queue-style without a cron
        values["overlap"] = "forbid" if raw.get("cron") is not None else "allow"
    given = set(raw) if isinstance(raw, dict) else set()
    ok = _check_job_rules(values, given, key, label, issues) and ok
    if isinstance(raw, dict) and "timezone" not in raw:  # a job runs in [worker] timezone
        values["timezone"] = zone
    if (
        paths is not None
        and "func" in values
        and not _import_job(values, key, label, paths, issues)
    ):
        return None
    return JobConfig(**values) if ok else None


def build_jobs(
    raw: object, zone: ZoneInfo, paths: Sequence[Path] | None, issues: Issues
) -> tuple[JobConfig, ...]:
    """The ``jobs`` array (see `build_job`); duplicate names are reported."""
    if raw is UNRESOLVED:
        return ()
    if not isinstance(raw, list):
        issues.add("jobs", f"expected an array of tables ([[jobs]]), got {describe(raw)}")
        return ()
    if paths is not None:
        extend_sys_path(paths)
    jobs: list[JobConfig] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name in first_index:
            issues.add(
                f"jobs[{index}].name",
                f"duplicate job name {name!r}: jobs[{first_index[name]}] and jobs[{index}] "
                "both use it; allowed: each name once",
            )
        elif isinstance(name, str):
            first_index[name] = index
        job = build_job(item, f"jobs[{index}]", zone, paths, issues)
        if job is not None:
            jobs.append(job)
    return tuple(jobs)
