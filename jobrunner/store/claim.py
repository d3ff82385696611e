"""Claiming: start due queued runs on a worker, under leases, in one transaction.

The store fetches (the held leases, the due candidates, locked) and writes (leases, runs
started, slots skipped, holders replaced); what becomes of each candidate is decided by the
pure `jobrunner.policy.decide_claim`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from jobrunner.policy import Decisions, LaneKey, decide_claim, lane_key, policy_of, rate_key
from jobrunner.records import Claim, ClaimedRun, Lease, Policy, Run
from jobrunner.store.direct import Direct
from jobrunner.store.engine import db_now
from jobrunner.store.leases import KEY_SEP, STARTED_AT, acquire, held_leases, lock_name, replace
from jobrunner.store.rates import rate_windows, record_windows, unblocked_at
from jobrunner.store.sql import Op, any_of, rows, unnest
from jobrunner.store.tables import UTCDateTime, as_utc, job_rates, job_runs, jobrunner_jobs


def claim(
    dialect: str,
    *,
    worker_id: str,
    limit: int,
    policies: Mapping[str, Policy],
    lease_ttl: float,
    ahead: float = 0.0,
) -> Op[Claim]:
    """Start up to `limit` due queued runs of the jobs in `policies` on this worker.

    Due runs (`run_at <= now`) are locked with `FOR UPDATE SKIP LOCKED` on PostgreSQL
    (SQLite serialises writers), highest priority first, then oldest. Each gets a lease in
    `job_locks` (fence incremented) if its job has a free lease slot; the insert of a lease
    only succeeds on a free row, so two workers can never hold the same one. Scheduled slots
    that cannot start are recorded `skipped` with the reason (`paused`, `misfired`,
    `overlap`) or, with overlap `replace`, take the lease from the running run, which is
    recorded `cancelled` (reason `replaced`). Manual runs, retries and catch-up slots
    (reason `catch-up`) of a job at capacity stay queued and run after the holder. Runs of
    jobs not in `policies` are never touched.

    With `ahead` (seconds), runs due within that time are claimed too, so that the claim
    is done when they are due: each is recorded running from its `run_at`, and the worker
    begins it then. Such a run is only taken if its job has a free lease slot now; every
    other decision (skip, replace, wait) is left to a claim at its due time.
    `Claim.next_due` says when to claim again.
    """
    if limit <= 0 or not policies:
        return Claim()
    held = yield from held_leases()
    filters = _Filters.of(held, policies)
    candidates, now = yield from _candidates(dialect, limit, list(policies), filters, ahead)
    result = Claim(now=now)
    if candidates and now is not None:
        windows = yield from rate_windows(dialect, _rated_keys(candidates, policies))
        decisions = decide_claim(candidates, held, policies, now, windows)
        yield from record_windows(decisions.rates)
        result = yield from _write(
            dialect, decisions, candidates, policies, now, worker_id, lease_ttl
        )
        result = _again_for(result, decisions, full=len(candidates) >= limit)
    if len(candidates) < limit:
        result = yield from _when_next(dialect, result, list(policies), filters.rated, ahead)
    return result


@dataclasses.dataclass(frozen=True)
class _Filters:
    """What a claim's read passes over: runs of jobs (`saturated`) and of (job, key) pairs
    (`full`) whose lease slots are all held, and of rate-limited jobs (`rated`) whose
    window is full now (as `job_rates.blocked_until` says)."""

    saturated: list[str]
    full: list[str]
    rated: list[str]

    @classmethod
    def of(
        cls, held: Mapping[LaneKey, Mapping[int, Lease]], policies: Mapping[str, Policy]
    ) -> _Filters:
        saturated, full = [], []
        for (name, key), slots in held.items():  # far fewer than the jobs, with many jobs
            pol = policies.get(name)
            if pol is None or (cap := pol.capacity) is None or len(slots) < cap:
                continue
            if pol.keyed:
                full.append(lock_name(name, key))
            elif not key:
                saturated.append(name)
        rated = [name for name, pol in policies.items() if pol.rate is not None]
        return cls(saturated, full, rated)

    @property
    def shape(self) -> tuple[bool, bool, bool]:
        return bool(self.saturated), bool(self.full), bool(self.rated)


def _rated_keys(
    candidates: list[tuple[Run, bool]], policies: Mapping[str, Policy]
) -> list[LaneKey]:
    """The rate windows the candidates start in (sorted: their rows are locked in order)."""
    keys = {rate_key(run, pol) for run, _ in candidates if (pol := policies[run.job_name]).rate}
    return sorted(keys)


def _again_for(result: Claim, decided: Decisions, *, full: bool) -> Claim:
    """Claim again at once when a full batch left runs of full (job, key) pairs or rate
    windows queued (the next read passes over them, to the runs behind), else when the
    first full rate window admits a start again."""
    again = result.now if full and decided.passed_over else None
    reopen = [at for _, at in decided.rates.values() if at is not None]
    if again is None and reopen and result.now is not None:
        again = max(result.now, datetime.fromtimestamp(min(reopen), UTC))
    if again is None or (result.next_due is not None and result.next_due <= again):
        return result
    return dataclasses.replace(result, next_due=again)


def _write(
    dialect: str,
    decided: Decisions,
    candidates: list[tuple[Run, bool]],
    policies: Mapping[str, Policy],
    now: datetime,
    worker_id: str,
    lease_ttl: float,
) -> Op[Claim]:
    """Carry out a claim's decisions: take the leases, replace holders, start the runs
    that got a lease, record the skipped slots."""
    wanted = [
        (run, lane_key(run, policy_of(run, policies))[1], slot) for run, slot in decided.start
    ]
    acquired, clock = yield from acquire(dialect, wanted, worker_id, lease_ttl, now)
    moved = yield from replace(worker_id, decided.replace, lease_ttl)
    waiting = decided.waiting
    waiting += len(decided.start) - len(acquired) + len(decided.replace) - len(moved)
    by_run = {lease.run_id: lease for lease in acquired + moved}
    # Runs not due yet and left queued (their job had no free lease slot, or a peer's
    # claim took it first): claim again at the first one's time.
    held_back = min(
        (run.run_at for run, _ in candidates if run.run_at > now and run.id not in by_run),
        default=None,
    )
    runs = [run for run, _ in decided.start] + [run for run, _ in decided.replace]
    # Each run as it was read (queued); it is now running under its lease.
    started = [ClaimedRun(run=r, lease=by_run[r.id]) for r in runs if r.id in by_run]
    # PostgreSQL's lease insert started its runs already (see `acquire`).
    yield from _start(
        dialect, now, worker_id, moved if dialect == "postgresql" else acquired + moved
    )
    yield from _skip(decided.skip)
    return Claim(
        started=started,
        skipped=decided.skip,
        replaced=[old.run_id for _, old in decided.replace if old.run_id is not None],
        waiting=max(waiting, 0),
        now=now,
        next_due=held_back,
        clock=clock,
    )


def _when_next(
    dialect: str, result: Claim, jobs: list[str], rated: list[str], ahead: float
) -> Op[Claim]:
    """`result` with when to claim next: `ahead` before the next run due later (or at the
    time of one due within `ahead` that a peer's claim holds, or when a full rate window of
    `rated` jobs admits a start again), and the latest clock."""
    later, db_time, clock = yield from _next_due(dialect, jobs)
    if rated:
        reopen = yield from unblocked_at(dialect, rated)
        if reopen is not None and (later is None or reopen < later):
            later = reopen
    # The latest clock reading: runs claimed ahead wait (and the claimer sleeps) less.
    clock = max(clock, result.clock) if result.clock is not None else clock
    now = result.now or db_time
    result = dataclasses.replace(result, now=now, clock=clock)
    if later is not None:
        # A run due within `ahead` is still queued: a peer's claim holds it (or held it
        # back); claim at its time. Else claim `ahead` before it.
        if later > now + timedelta(seconds=ahead):
            later -= timedelta(seconds=ahead)
        if result.next_due is None or later < result.next_due:
            result = dataclasses.replace(result, next_due=later)
    return result


_AHEAD = sa.bindparam("ahead", type_=sa.Float())


def _candidates(
    dialect: str, limit: int, jobs: list[str], filters: _Filters, ahead: float
) -> Op[tuple[list[tuple[Run, bool]], datetime | None]]:
    """Queued runs due within `ahead` seconds (locked, SKIP LOCKED) but those `filters`
    pass over, each with its job's paused flag, and db now."""
    query = _candidates_query(dialect, *filters.shape)
    params: dict[str, Any] = {"jobs": jobs, "limit": limit, "ahead": ahead}
    for name in ("saturated", "full", "rated"):
        if getattr(filters, name):
            params[name] = getattr(filters, name)
    names = job_runs.c.keys()
    width = len(names)
    result = yield query, params
    found = result.all()
    out = [(Run.from_columns(names, row[:width]), bool(row[width])) for row in found]
    if not found:
        return out, None
    # `_now` comes raw (the same in every row): converted once, not once per row.
    return out, as_utc(found[-1][width + 1])


@functools.cache
def _candidates_query(dialect: str, saturated: bool, full: bool, rated: bool) -> Direct:
    """The claim's read, built once per shape: queued runs of `:jobs` due within `:ahead`
    seconds in claim order, at most `:limit`, locked; with `saturated` (`full`), runs of
    `:saturated` jobs (`:full` job-key pairs) only if scheduled; with `rated`, no runs of
    `:rated` jobs whose rate window is full."""
    paused = (
        sa.select(jobrunner_jobs.c.paused)
        .where(jobrunner_jobs.c.name == job_runs.c.job_name)
        .scalar_subquery()
    )
    query = (
        sa.select(
            job_runs,
            sa.func.coalesce(paused, sa.false()).label("_paused"),
            sa.type_coerce(db_now(), sa.types.NullType()).label("_now"),
        )
        .where(
            job_runs.c.status == "queued",
            job_runs.c.run_at <= db_now(_AHEAD),
            any_of(dialect, job_runs.c.job_name, "jobs"),
        )
        .order_by(job_runs.c.priority.desc(), job_runs.c.run_at, job_runs.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
        .with_for_update(skip_locked=True, of=job_runs)
    )
    scheduled = job_runs.c.trigger == "schedule"
    if saturated:
        query = query.where(scheduled | ~any_of(dialect, job_runs.c.job_name, "saturated"))
    if full:
        pair = job_runs.c.job_name + KEY_SEP + sa.func.coalesce(job_runs.c.concurrency_key, "")
        query = query.where(scheduled | ~any_of(dialect, pair, "full"))
    if rated:
        blocked = sa.exists().where(
            job_rates.c.job_name == job_runs.c.job_name,
            job_rates.c.concurrency_key == sa.func.coalesce(job_runs.c.concurrency_key, ""),
            job_rates.c.blocked_until > db_now(),
        )
        query = query.where(~any_of(dialect, job_runs.c.job_name, "rated") | ~blocked)
    return Direct(query)


def _next_due(dialect: str, jobs: list[str]) -> Op[tuple[datetime | None, datetime, datetime]]:
    """The earliest future `run_at` of a queued run of these jobs (to sleep until it), the
    database's now, and its clock as the query ended."""
    row = (yield _next_due_query(dialect), {"jobs": jobs}).one()
    return row[0], row[1], row[2] if dialect == "postgresql" else datetime.now(UTC)


@functools.cache
def _next_due_query(dialect: str) -> Direct:
    columns: list[sa.ColumnElement[Any]] = [sa.func.min(job_runs.c.run_at), db_now()]
    if dialect == "postgresql":
        columns.append(sa.func.clock_timestamp(type_=UTCDateTime()))
    return Direct(
        sa.select(*columns).where(
            job_runs.c.status == "queued",
            job_runs.c.run_at > db_now(),
            any_of(dialect, job_runs.c.job_name, "jobs"),
        )
    )


def _start(dialect: str, now: datetime, worker_id: str, leases: list[Lease]) -> Op[None]:
    """Mark the runs of these leases running under them."""
    if leases:
        given = [{"rid": lease.run_id, "f": lease.fence} for lease in leases]
        yield _start_statement(dialect), rows(dialect, given, worker=worker_id, now=now)


@functools.cache
def _start_statement(dialect: str) -> sa.Update:
    """Mark claimed runs (`rid`) running under their leases (fence `f`): one statement of
    fixed text on PostgreSQL (see `sql.rows`), executemany on SQLite."""
    started = {
        "status": "running",
        "worker_id": sa.bindparam("worker", type_=sa.String()),
        "started_at": STARTED_AT,
    }
    if dialect == "postgresql":
        given = unnest(("rid", sa.BigInteger()), ("f", sa.BigInteger()))
        update = job_runs.update().where(job_runs.c.id == given.c.rid)
        return update.values(fence=given.c.f, **started)
    return (
        job_runs.update()
        .where(job_runs.c.id == sa.bindparam("rid"))
        .values(fence=sa.bindparam("f"), **started)
    )


def _skip(skipped: list[tuple[Run, str]]) -> Op[None]:
    """Record slots skipped, with their reasons."""
    if skipped:
        yield (
            job_runs.update()
            .where(job_runs.c.id == sa.bindparam("rid"))
            .values(status="skipped", reason=sa.bindparam("why"), finished_at=db_now()),
            [{"rid": run.id, "why": why} for run, why in skipped],
        )
