"""Why a queued run waits, and which queues no live worker serves.

Pure functions of what the store returns (the run, its job's catalog entry, the workers,
the held leases, the run's rate window) and the database's now: `runs show` prints
`waiting_reason` for a queued run, `jobs list` and `why` flag a job whose queue no live worker
serves (`queue_served`), and the workers' metrics count such queues.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from jobrunner.jobconfig import DEFAULT_QUEUE
from jobrunner.records import CatalogEntry, LockRow, Run, WorkerRow
from jobrunner.units import format_duration


def job_queue(definition: Mapping[str, Any]) -> str:
    """The queue of a catalogued job (its definition leaves out the default)."""
    return str(definition.get("queue", DEFAULT_QUEUE))


def live(workers: Iterable[WorkerRow], now: datetime, lease_ttl: timedelta) -> list[WorkerRow]:
    """Workers seen within `lease_ttl` that claim runs (not draining)."""
    return [w for w in workers if now - w.last_seen <= lease_ttl and w.state == "running"]


def serves(worker: WorkerRow, job: str, queue: str) -> bool:
    """Whether `worker` runs `job` of `queue`: it defines the job and serves the queue."""
    return job in worker.jobs and (worker.queues is None or queue in worker.queues)


def queue_served(entry: CatalogEntry, live_workers: Sequence[WorkerRow]) -> bool:
    """Whether a live worker runs the job's runs."""
    queue = job_queue(entry.definition)
    return any(serves(w, entry.name, queue) for w in live_workers)


def unserved(
    entries: Iterable[CatalogEntry], live_workers: Sequence[WorkerRow]
) -> dict[str, list[str]]:
    """The queues no live worker serves, each with its jobs (by name)."""
    return unserved_queues({e.name: job_queue(e.definition) for e in entries}, live_workers)


def unserved_queues(
    queues: Mapping[str, str], live_workers: Sequence[WorkerRow]
) -> dict[str, list[str]]:
    """Of the jobs in `queues` (job -> its queue), the queues no live worker serves, each
    with its jobs (by name)."""
    found: dict[str, list[str]] = {}
    for name, queue in queues.items():
        if not any(serves(w, name, queue) for w in live_workers):
            found.setdefault(queue, []).append(name)
    return found


def unserved_text(entry: CatalogEntry, live_workers: Sequence[WorkerRow]) -> str:
    """Why no live worker runs the job: none alive, none defines it, or none serves its queue."""
    queue = job_queue(entry.definition)
    if not live_workers:
        return "no worker is alive: start `jobrunner run`"
    if not any(entry.name in w.jobs for w in live_workers):
        return f"none of the {len(live_workers)} live worker(s) defines the job in its config"
    return (
        f"queue {queue!r} is served by no live worker: start a worker whose [worker] queues "
        f"includes {queue!r} (or leaves queues out, to serve every queue)"
    )


def waiting_reason(
    run: Run,
    entry: CatalogEntry | None,
    live_workers: Sequence[WorkerRow],
    locks: Sequence[LockRow],
    blocked_until: datetime | None,
    now: datetime,
) -> str | None:
    """Why a queued run has not started (None for a run that is not queued)."""
    if run.status != "queued":
        return None
    if run.run_at > now:
        return f"not due yet: due at {run.run_at.isoformat()} (in {_span(run.run_at - now)})"
    if entry is None:
        return "its job is not in the catalog: no live worker defines it"
    if entry.paused and run.trigger == "schedule":
        return "the job is paused: a worker records this slot skipped (reason paused)"
    if not queue_served(entry, live_workers):
        return unserved_text(entry, live_workers)
    return _limit_reason(run, entry, locks, blocked_until, now) or (
        "due: waiting for a free place on a worker (the workers that serve its queue are "
        "busy, or will claim it at their next claim)"
    )


def _limit_reason(
    run: Run,
    entry: CatalogEntry,
    locks: Sequence[LockRow],
    blocked_until: datetime | None,
    now: datetime,
) -> str | None:
    """The limit of the job (or of its concurrency key) that holds the run back, if any."""
    d = entry.definition
    keyed = d.get("concurrency_key") is not None
    key = (run.concurrency_key or "") if keyed else ""
    held = [lock for lock in locks if lock.job_name == run.job_name and lock.concurrency_key == key]
    running = ", ".join(str(lock.run_id) for lock in held[:5])
    overlap = d.get("overlap", "forbid")
    capacity = 1 if overlap != "allow" else d.get("max_per_key" if keyed else "max_concurrency")
    if capacity is not None and len(held) >= int(capacity):
        if keyed:
            return (
                f"max_per_key {capacity} reached for concurrency key {key!r} "
                f"(running: {running}): it starts when one of them ends"
            )
        limit = f"overlap {overlap!r}" if overlap != "allow" else f"max_concurrency {capacity}"
        return f"{limit} reached (running: {running}): it starts when one of them ends"
    if blocked_until is not None and blocked_until > now:
        per = f" for concurrency key {key!r}" if keyed else ""
        return (
            f"rate limit {d.get('rate_limit')} reached{per}: the next start is allowed at "
            f"{blocked_until.isoformat()} (in {_span(blocked_until - now)})"
        )
    return None


def _span(delta: timedelta) -> str:
    return format_duration(timedelta(seconds=round(max(delta.total_seconds(), 0), 3)))
