"""Rate windows in `job_rates`: per (job, key value) the start times of its last windows.

A claim that would start runs of a rate-limited job locks the rows of their windows (in
(job, key) order, so that claims of several replicas never wait on each other in a cycle),
decides with `policy.decide_claim`, and writes back the starts it made and, when a window
is full, when it admits the next start (`blocked_until`): later claims pass over its runs
until then, and the claimer sleeps until the first window reopens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

from jobrunner.store.engine import db_now
from jobrunner.store.sql import Op, any_of, insert
from jobrunner.store.tables import job_rates

Key = tuple[str, str]


def rate_windows(dialect: str, keys: Sequence[Key]) -> Op[dict[Key, list[float]]]:
    """The start times (seconds since the epoch) of each window in `keys`, its row locked
    (created empty the first time)."""
    if not keys:
        return {}
    found = yield from _locked(keys)
    missing = [key for key in keys if key not in found]
    if missing:  # the first claim of a window: create its row, then lock it as the others
        new = [{"job_name": j, "concurrency_key": k, "starts": []} for j, k in missing]
        yield insert(dialect, job_rates).on_conflict_do_nothing(), new
        found.update((yield from _locked(missing)))
    return found


def _locked(keys: Sequence[Key]) -> Op[dict[Key, list[float]]]:
    pair = sa.tuple_(job_rates.c.job_name, job_rates.c.concurrency_key)
    found = yield (
        sa.select(job_rates.c.job_name, job_rates.c.concurrency_key, job_rates.c.starts)
        .where(pair.in_(list(keys)))
        .order_by(job_rates.c.job_name, job_rates.c.concurrency_key)
        .with_for_update()
    )
    return {(j, k): [float(t) for t in starts] for j, k, starts in found}


def record_windows(windows: Mapping[Key, tuple[list[float], float | None]]) -> Op[None]:
    """Write back windows a claim started runs in: their start times and, for a full one,
    when it admits the next start."""
    if not windows:
        return
    given = [
        {
            "j": job,
            "k": key,
            "s": starts,
            "b": None if reopen is None else datetime.fromtimestamp(reopen, UTC),
        }
        for (job, key), (starts, reopen) in windows.items()
    ]
    yield (
        job_rates.update()
        .where(
            job_rates.c.job_name == sa.bindparam("j"),
            job_rates.c.concurrency_key == sa.bindparam("k"),
        )
        .values(starts=sa.bindparam("s"), blocked_until=sa.bindparam("b")),
        given,
    )


def unblocked_at(dialect: str, jobs: list[str]) -> Op[datetime | None]:
    """When the first full window of these jobs admits a start again (None: none is full)."""
    first = (
        yield (
            sa.select(sa.func.min(job_rates.c.blocked_until)).where(
                any_of(dialect, job_rates.c.job_name, "jobs"), job_rates.c.blocked_until > db_now()
            ),
            {"jobs": jobs},
        )
    ).scalar_one()
    return first  # type: ignore[no-any-return]


def blocked_until(job: str, key: str) -> Op[datetime | None]:
    """While the window of (job, key) is full: when it admits the next start."""
    found = (
        yield sa.select(job_rates.c.blocked_until).where(
            job_rates.c.job_name == job, job_rates.c.concurrency_key == key
        )
    ).scalar_one_or_none()
    return found  # type: ignore[no-any-return]
