"""Every table jobrunner owns, in one MetaData (both PostgreSQL and SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
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
        if value is None:
            return None
        if isinstance(value, str):  # computed by SQLite's strftime() in a RETURNING clause
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


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
    sa.UniqueConstraint("job_name", "scheduled_for", "attempt", name="uq_job_runs_slot_attempt"),
    sa.UniqueConstraint("job_name", "idempotency_key", name="uq_job_runs_idempotency"),
    sa.CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in RUN_STATUSES) + ")", name="ck_job_runs_status"
    ),
    sa.CheckConstraint(
        "trigger IN (" + ", ".join(f"'{t}'" for t in TRIGGERS) + ")", name="ck_job_runs_trigger"
    ),
)
sa.Index(  # claim order: a claim reads its batch off this index, no sort
    "ix_job_runs_queued",
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
sa.Index(
    "ix_job_runs_correlation",
    job_runs.c.correlation_id,
    postgresql_where=job_runs.c.correlation_id.is_not(None),
    sqlite_where=job_runs.c.correlation_id.is_not(None),
)

job_locks = sa.Table(
    "job_locks",
    metadata,
    sa.Column("job_name", sa.String(200), primary_key=True),
    sa.Column("slot", sa.Integer(), primary_key=True),
    sa.Column("run_id", sa.BigInteger(), nullable=True),
    sa.Column("worker_id", sa.String(200), nullable=True),
    sa.Column("fence", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("acquired_at", UTCDateTime(), nullable=True),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
)
sa.Index("ix_job_locks_worker", job_locks.c.worker_id)

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
)
