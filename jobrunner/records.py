"""Frozen records the store hands out and takes in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from jobrunner.signature import parameters_of

if TYPE_CHECKING:
    from jobrunner.config import JobConfig

Overlap = Literal["forbid", "allow", "replace"]


@dataclass(frozen=True, kw_only=True)
class Run:
    """One row of `job_runs`: one attempt to run a job."""

    id: int
    job_name: str
    trigger: str
    scheduled_for: datetime | None
    run_at: datetime
    status: str
    reason: str | None
    attempt: int
    max_attempts: int
    worker_id: str | None
    fence: int | None
    kwargs: Mapping[str, Any]
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: Mapping[str, Any] | None
    cancel_requested: bool
    idempotency_key: str | None
    correlation_id: str | None
    retry_of: int | None
    priority: int = 0  # higher first
    concurrency_key: str | None = None  # its lease and rate limit are those of (job, key)
    result: Any = None  # its job's return value (JSON), when it succeeded and returned one
    result_note: str | None = None  # why a return value was not kept
    unique_digest: str | None = None  # of a job with unique_for: its kwargs' digest
    schedule_key: str = ""  # a runtime schedule's slot: the schedule's key
    schedule_version: int | None = None  # ... and the version of it that decided the slot
    overlap: Overlap | None = None  # ... and the schedule's overlap, if it overrides the job's
    traceparent: str | None = None  # W3C: the span that enqueued it (its span's parent)
    trace_link: str | None = None  # W3C: a retry's, the span of the attempt before it

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()
        }

    @classmethod
    def from_columns(cls, names: Sequence[str], values: Iterable[Any]) -> Run:
        """The record of a `job_runs` row given as every column's name and value, made
        without `__init__`: a frozen dataclass sets each of its 20 fields through
        `object.__setattr__` (6 us a record; a claim makes hundreds)."""
        run = object.__new__(cls)
        run.__dict__.update(zip(names, values, strict=True))
        return run


@dataclass(frozen=True, kw_only=True)
class Slot:
    """A scheduled slot to record: queued to run, or skipped with a reason."""

    job_name: str
    scheduled_for: datetime
    run_at: datetime
    max_attempts: int = 1
    status: Literal["queued", "skipped"] = "queued"
    reason: str | None = None
    priority: int = 0
    concurrency_key: str | None = None  # the value of the job's key kwarg in its kwargs
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # a runtime schedule's kwargs
    schedule_key: str = ""  # a runtime schedule's slot: its key, version and overlap
    schedule_version: int | None = None
    overlap: Overlap | None = None


@dataclass(frozen=True, kw_only=True)
class ScheduleRow:
    """A schedule created at runtime (`jobrunner_schedules`): slots of `job_name` on `cron`
    with its own key, kwargs and overrides (None: the job's)."""

    job_name: str
    key: str
    cron: str
    timezone: str | None
    kwargs: Mapping[str, Any]
    catch_up: Literal["skip", "latest", "all"] | None
    overlap: Overlap | None
    status: Literal["active", "paused", "deleted", "retired"]
    status_note: str | None
    version: int
    cursor: datetime  # its slots up to this instant are recorded
    next_fire_at: datetime | None  # its next slot; None once deleted or retired
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()
        }


@dataclass(frozen=True, kw_only=True)
class Policy:
    """What the claimer needs to know about a job this worker can run."""

    overlap: Overlap = "forbid"
    max_concurrency: int | None = None  # only for overlap="allow"; None = unlimited
    misfire_grace: float = 60.0  # seconds a scheduled slot may start late
    keyed: bool = False  # a concurrency_key: lease slots (and the rate) are per key value
    max_per_key: int | None = None  # with `keyed`: runs of one key value at once
    rate: tuple[int, float] | None = None  # at most N starts in any window of S seconds

    @property
    def capacity(self) -> int | None:
        """Lease slots of the job (of each key value when `keyed`); None: unlimited."""
        if self.overlap != "allow":
            return 1
        return (self.max_per_key if self.keyed else self.max_concurrency) or None


@dataclass(frozen=True, kw_only=True)
class Lease:
    """A lease in `job_locks`: the run holding one slot of a job, with its fence token."""

    job_name: str
    slot: int
    run_id: int
    fence: int
    key: str = ""  # the concurrency key value ('' for a job without one)


@dataclass(frozen=True, kw_only=True)
class ClaimedRun:
    """A run a claim started: `run` as it was read while queued, running under `lease`."""

    run: Run
    lease: Lease


@dataclass(frozen=True, kw_only=True)
class Claim:
    """The outcome of one claim: runs started here, slots skipped, runs replaced."""

    started: list[ClaimedRun] = field(default_factory=list)
    skipped: list[tuple[Run, str]] = field(default_factory=list)
    replaced: list[int] = field(default_factory=list)
    waiting: int = 0  # candidates left queued because their job is at capacity
    now: datetime | None = None
    # When a claim may find more (by the database's clock): the `run_at` of a run due within
    # `ahead` but left queued (held back, or held by a peer's claim), else that of the next
    # run due later, less `ahead` (when looked up).
    next_due: datetime | None = None
    # The database's clock read late in the claim (after the leases were taken, and by the
    # next-due query): a run claimed ahead of its `run_at` waits for it by this reading,
    # counted from when the claim returned, so that it never begins early (`now`, the
    # transaction's start, came an unknown delay after the claim was sent).
    clock: datetime | None = None


FinalStatus = Literal["succeeded", "failed", "timed_out", "cancelled", "lost"]
"""The statuses a run's holder records (`Outcome.status`)."""


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """The final state of a run, written only if `lease` is still held (fencing)."""

    lease: Lease
    status: FinalStatus
    error: Mapping[str, Any] | None = None
    reason: str | None = None
    retry_in: float | None = None  # seconds; None = no retry
    result: str | None = None  # the job's return value as JSON text, if kept
    result_note: str | None = None  # why a return value was not kept
    run: Run | None = None  # the run as claimed (for its notification events), if known
    trace: str | None = None  # W3C traceparent of the run's span (a retry's span links to it)


@dataclass(frozen=True, kw_only=True)
class Renewal:
    held: frozenset[int]  # run ids whose lease this worker still holds
    cancel_requested: frozenset[int]
    registered: bool  # False when the worker row was gone (re-register)


@dataclass(frozen=True, kw_only=True)
class Heartbeat:
    """What one heartbeat transaction found."""

    renewal: Renewal
    lost: list[Run]  # runs of dead holders this pass recorded lost (and retried)
    catalog: dict[str, tuple[str, bool]]  # job -> (definition hash, publisher alive)
    # due queued runs by (queue, priority class) (housekeeping only)
    queue_depth: Mapping[tuple[str, str], int] | None
    # queue -> its jobs, for the queues no live worker serves (housekeeping only)
    unserved: Mapping[str, list[str]] | None = None
    retired: list[str]  # jobs removed from the catalog (housekeeping passes only)
    retired_schedules: list[tuple[str, str]] = field(default_factory=list)  # their (job, key)
    next_expiry_in: float | None  # seconds until another worker's first lease expires


@dataclass(frozen=True, kw_only=True)
class WorkerInfo:
    worker_id: str
    hostname: str
    pid: int
    version: str
    config_hash: str
    jobs: Mapping[str, str]  # job name -> definition hash
    queues: Sequence[str] | None = None  # the queues it serves; None: every queue


@dataclass(frozen=True, kw_only=True)
class CatalogEntry:
    name: str
    cron: str | None
    timezone: str
    config_hash: str
    definition: Mapping[str, Any]
    paused: bool = False
    published_by: str | None = None
    updated_at: datetime | None = None
    parameters: Sequence[Mapping[str, Any]] | None = None  # see `jobrunner.signature`


def catalog_entries(jobs: Iterable[JobConfig]) -> list[CatalogEntry]:
    """What a worker publishes for its jobs: each job's definition and its hash."""
    return [
        CatalogEntry(
            name=j.name,
            cron=j.cron,
            timezone=j.timezone.key,
            config_hash=j.definition_hash,
            definition=j.definition(),
            parameters=None if j.fn is None else parameters_of(j.fn),
        )
        for j in jobs
    ]


@dataclass(frozen=True, kw_only=True)
class LockRow:
    job_name: str
    slot: int
    run_id: int | None
    worker_id: str | None
    fence: int
    acquired_at: datetime | None
    expires_at: datetime | None
    concurrency_key: str = ""


@dataclass(frozen=True, kw_only=True)
class WorkerRow:
    worker_id: str
    hostname: str
    pid: int
    version: str
    config_hash: str
    jobs: Mapping[str, str]
    state: str
    started_at: datetime
    last_seen: datetime
    queues: Sequence[str] | None = None  # None: every queue
