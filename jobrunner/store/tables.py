"""Every table jobrunner owns, in one MetaData (both PostgreSQL and SQLite)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData()

RUN_STATUSES = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "lost",
    "skipped",
)
FINAL_STATUSES = frozenset(RUN_STATUSES) - {"queued", "running"}
TRIGGERS = ("schedule", "manual", "retry")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores `timestamptz`. SQLite stores naive UTC text
    (`YYYY-MM-DD HH:MM:SS.ffffff`); this is the one place that normalises it.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: jobrunner stores timezone-aware UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return as_utc(value)


def as_utc(value: Any) -> datetime | None:
    """A timestamp as either database returns it, as timezone-aware UTC (any dialect)."""
    if value is None:
        return None
    if isinstance(value, str):  # computed by SQLite's strftime() in a RETURNING clause
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
    return value.astimezone(UTC)  # type: ignore[no-any-return]


class PgArray(TypeDecorator[Sequence[Any]]):
    """A PostgreSQL array parameter (`= ANY(:ids)`, `unnest(:ids)`) of `kind` (`bigint`,
    `integer`, `varchar` or `timestamptz`), sent as one array literal (`{1,2,3}`).

    psycopg dumps a Python list element by element, with a regular expression per element
    to decide its quoting: about 1.3 us each, 13 ms for the 10,000 job names of a claim.
    Written here with `str.join`, mostly in C: strings and numbers need no per-element
    Python call unless a string holds a quote, a backslash or is None.
    """

    impl = sa.String()
    cache_ok = True

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in _ARRAY_KINDS:
            raise ValueError(f"array kind {kind!r}: one of {', '.join(_ARRAY_KINDS)}")
        self.kind = kind

    @classmethod
    def of(cls, item: Any) -> PgArray:
        """The array type for a column type: String, Integer, BigInteger, DateTime."""
        if isinstance(item, sa.String):
            return cls("varchar")
        if isinstance(item, sa.BigInteger):
            return cls("bigint")
        if isinstance(item, sa.Integer):
            return cls("integer")
        if isinstance(item, (sa.DateTime, UTCDateTime)):
            return cls("timestamptz")
        raise TypeError(f"no array literal for {item!r}")

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        # Rendered as `%(name)s::BIGINT[]`: the literal arrives as a typed parameter, so a
        # custom plan holds the array as a constant (`= ANY` hashes it). A CAST expression
        # around a text parameter instead was parsed again for every row: 480 ms per claim
        # with 10,000 job names.
        return dialect.type_descriptor(_ARRAY_KINDS[self.kind])

    def bind_processor(self, dialect: Dialect) -> Any:
        # The literal as it is: ARRAY's own processor would take the string for a list.
        def process(value: Sequence[Any] | None) -> str | None:
            return self.process_bind_param(value, dialect)

        return process

    def process_bind_param(self, value: Sequence[Any] | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if self.kind in ("bigint", "integer"):
            items = map(_int_item, value) if None in value else map(str, value)
            return "{" + ",".join(items) + "}"
        if self.kind == "timestamptz":
            return "{" + ",".join(map(_time_item, value)) + "}"
        return _text_array(value)


def _int_item(value: int | None) -> str:
    return "NULL" if value is None else str(value)


@functools.lru_cache(maxsize=1024)  # slots due together share their instants
def _time_item(value: datetime | None) -> str:
    if value is None:
        return "NULL"
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: jobrunner stores timezone-aware UTC only")
    return value.astimezone(UTC).isoformat()


def _text_array(values: Sequence[str | None]) -> str:
    """`{"a","b"}`: every element quoted; `"` and `\\` escaped; None as NULL."""
    try:
        joined = "\x00".join(values)  # type: ignore[arg-type]
    except TypeError:  # a None (or not a string) among them
        return "{" + ",".join(_text_item(v) for v in values) + "}"
    if not values:
        return "{}"
    if "\\" in joined or '"' in joined or joined.count("\x00") != len(values) - 1:
        return "{" + ",".join(_text_item(v) for v in values) + "}"
    return '{"' + joined.replace("\x00", '","') + '"}'


def _text_item(value: str | None) -> str:
    if value is None:
        return "NULL"
    if not isinstance(value, str):
        raise TypeError(f"array of text: {value!r} is not a string")
    if "\x00" in value:
        raise ValueError("text with a NUL character cannot be stored")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_ARRAY_KINDS: dict[str, Any] = {
    "bigint": postgresql.ARRAY(sa.BigInteger()),
    "integer": postgresql.ARRAY(sa.Integer()),
    "varchar": postgresql.ARRAY(sa.String()),
    "timestamptz": postgresql.ARRAY(sa.DateTime(timezone=True)),
}


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

job_runs = sa.Table(
    "job_runs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("job_name", sa.String(200), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("scheduled_for", UTCDateTime(), nullable=True),
    sa.Column("run_at", UTCDateTime(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("worker_id", sa.String(200), nullable=True),
    sa.Column("fence", sa.BigInteger(), nullable=True),
    sa.Column("kwargs", sa.JSON(), nullable=False),
    sa.Column("enqueued_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("error", sa.JSON(), nullable=True),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("correlation_id", sa.String(200), nullable=True),
    sa.Column("retry_of", sa.BigInteger(), nullable=True),
    sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),  # higher first
    # the value of the job's `concurrency_key` kwarg (or the enqueue's): its lease and rate
    # limit are those of (job, key)
    sa.Column("concurrency_key", sa.String(200), nullable=True),
    sa.Column("result", sa.JSON(none_as_null=True), nullable=True),  # the job's return value
    sa.Column("result_note", sa.String(300), nullable=True),  # why it was not kept
    # of a job with `unique_for`: the digest of its kwargs (`queue.kwargs_digest`)
    sa.Column("unique_digest", sa.String(64), nullable=True),
    # a runtime schedule's slot: its key ('' for a TOML schedule and every other run), the
    # version of the schedule that decided the slot, and the schedule's overlap if it has one
    sa.Column("schedule_key", sa.String(200), nullable=False, server_default=""),
    sa.Column("schedule_version", sa.Integer(), nullable=True),
    sa.Column("overlap", sa.String(8), nullable=True),
    # OpenTelemetry (W3C traceparent): the enqueuing span, parent of the run's span, and for a
    # retry the span of the attempt before it, which the retry's span links to
    sa.Column("traceparent", sa.String(55), nullable=True),
    sa.Column("trace_link", sa.String(55), nullable=True),
    sa.CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in RUN_STATUSES) + ")", name="ck_job_runs_status"
    ),
    sa.CheckConstraint(
        "trigger IN (" + ", ".join(f"'{t}'" for t in TRIGGERS) + ")", name="ck_job_runs_trigger"
    ),
)
# Guarantee 1 as a constraint: one row per (job, slot, attempt) of scheduled runs. Unique
# indexes only where a conflict is possible (migration 0005): runs without a slot or an
# idempotency key wrote an entry into both on every status change.
SCHEDULED = job_runs.c.scheduled_for.is_not(None)
KEYED = job_runs.c.idempotency_key.is_not(None)
SLOT_KEY = ["job_name", "schedule_key", "scheduled_for", "attempt"]
sa.Index(
    "uq_job_runs_slot_attempt",
    job_runs.c.job_name,
    job_runs.c.schedule_key,
    job_runs.c.scheduled_for,
    job_runs.c.attempt,
    unique=True,
    postgresql_where=SCHEDULED,
    sqlite_where=SCHEDULED,
)
sa.Index(
    "uq_job_runs_idempotency",
    job_runs.c.job_name,
    job_runs.c.idempotency_key,
    unique=True,
    postgresql_where=KEYED,
    sqlite_where=KEYED,
)
sa.Index(  # claim order (higher priority first): a claim reads its batch off it, no sort
    "ix_job_runs_queued",
    job_runs.c.priority.desc(),
    job_runs.c.run_at,
    job_runs.c.id,
    postgresql_where=job_runs.c.status == "queued",
    sqlite_where=job_runs.c.status == "queued",
)
# A status change is never a HOT update: it writes an entry into every index below, so the
# table keeps few of them, partial where only some runs need one (migration 0004).
sa.Index(  # the reaper's search for running runs without a lease
    "ix_job_runs_running",
    job_runs.c.started_at,
    postgresql_where=job_runs.c.status == "running",
    sqlite_where=job_runs.c.status == "running",
)
sa.Index("ix_job_runs_enqueued", job_runs.c.enqueued_at)
sa.Index(  # unique_for: the runs of a job with equal kwargs, newest last
    "ix_job_runs_unique",
    job_runs.c.job_name,
    job_runs.c.unique_digest,
    job_runs.c.enqueued_at,
    postgresql_where=job_runs.c.unique_digest.is_not(None),
    sqlite_where=job_runs.c.unique_digest.is_not(None),
)
sa.Index(  # the retries of a run (`runs show`, the dashboard's run page): few rows
    "ix_job_runs_retry_of",
    job_runs.c.retry_of,
    postgresql_where=job_runs.c.retry_of.is_not(None),
    sqlite_where=job_runs.c.retry_of.is_not(None),
)
sa.Index(
    "ix_job_runs_correlation",
    job_runs.c.correlation_id,
    postgresql_where=job_runs.c.correlation_id.is_not(None),
    sqlite_where=job_runs.c.correlation_id.is_not(None),
)

# A lease's name is its job's, or with a concurrency key "JOB\x1fKEY" (`leases.lock_name`):
# the slots of a keyed job are per key value, under the same primary key as any other.
job_locks = sa.Table(
    "job_locks",
    metadata,
    sa.Column("job_name", sa.String(401), primary_key=True),
    sa.Column("slot", sa.Integer(), primary_key=True),
    sa.Column("run_id", sa.BigInteger(), nullable=True),
    sa.Column("worker_id", sa.String(200), nullable=True),
    sa.Column("fence", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("acquired_at", UTCDateTime(), nullable=True),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
)
sa.Index("ix_job_locks_worker", job_locks.c.worker_id)

# `rate_limit`: the start times (seconds since the epoch, by the database's clock) of the
# last window of a job (per key value: '' without a key). A claim locks the row, counts, and
# appends the starts it makes: at most N in any window, across replicas.
job_rates = sa.Table(
    "job_rates",
    metadata,
    sa.Column("job_name", sa.String(200), primary_key=True),
    sa.Column("concurrency_key", sa.String(200), primary_key=True, server_default=""),
    sa.Column("starts", sa.JSON(), nullable=False),
    # when the window admits the next start, while it is full: claims pass over its runs
    sa.Column("blocked_until", UTCDateTime(), nullable=True),
)

jobrunner_jobs = sa.Table(
    "jobrunner_jobs",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("cron", sa.String(200), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("definition", sa.JSON(), nullable=False),
    sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    sa.Column("published_by", sa.String(200), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # the job function's keyword parameters (`jobrunner.signature`); NULL: not published
    sa.Column("parameters", sa.JSON(none_as_null=True), nullable=True),
)

# Schedules an app creates at runtime (`Client.create_schedule`), keyed by (job, key). The
# planner claims the rows whose `next_fire_at` is due soon (the partial index), records their
# slots and moves `cursor` (slots up to it are recorded) and `next_fire_at` on. `status`:
# active, paused, deleted (by a client) or retired (its job left the catalog); `version`
# grows with every change, and each slot records the version that decided it.
jobrunner_schedules = sa.Table(
    "jobrunner_schedules",
    metadata,
    sa.Column("job_name", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("cron", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=True),  # NULL: the job's zone
    sa.Column("kwargs", sa.JSON(), nullable=False),
    sa.Column("catch_up", sa.String(8), nullable=True),  # NULL: the job's
    sa.Column("overlap", sa.String(8), nullable=True),  # NULL: the job's
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("status_note", sa.String(200), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("cursor", UTCDateTime(), nullable=False),
    sa.Column("next_fire_at", UTCDateTime(), nullable=True),  # NULL: deleted or retired
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint(
        "status IN ('active', 'paused', 'deleted', 'retired')", name="ck_schedules_status"
    ),
)
sa.Index(
    "ix_schedules_next_fire",
    jobrunner_schedules.c.next_fire_at,
    postgresql_where=jobrunner_schedules.c.next_fire_at.is_not(None),
    sqlite_where=jobrunner_schedules.c.next_fire_at.is_not(None),
)

# Notification events (`[[notify]]`), written in the transaction of their cause, one row per
# (event, target); any replica that knows the target delivers it (claimed with SKIP LOCKED:
# a claim moves `next_attempt_at` ahead, so a replica that dies mid-delivery leaves it to
# another). `status`: pending, delivered, dropped (kept too long without a delivery).
jobrunner_outbox = sa.Table(
    "jobrunner_outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("job_name", sa.String(200), nullable=False),
    sa.Column("run_id", sa.BigInteger(), nullable=True),
    sa.Column("body", sa.JSON(), nullable=False),
    sa.Column("status", sa.String(12), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.String(300), nullable=True),
    sa.UniqueConstraint("event_id", "target", name="uq_outbox_event_target"),
)
sa.Index(
    "ix_outbox_pending",
    jobrunner_outbox.c.next_attempt_at,
    postgresql_where=jobrunner_outbox.c.status == "pending",
    sqlite_where=jobrunner_outbox.c.status == "pending",
)

jobrunner_workers = sa.Table(
    "jobrunner_workers",
    metadata,
    sa.Column("worker_id", sa.String(200), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("jobs", sa.JSON(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, server_default="running"),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen", UTCDateTime(), nullable=False),
    sa.Column("queues", sa.JSON(), nullable=True),  # the queues it serves; NULL: every queue
)
