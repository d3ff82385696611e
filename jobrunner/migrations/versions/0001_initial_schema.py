"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobrunner.store.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_locks",
        sa.Column("job_name", sa.String(length=200), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("fence", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("acquired_at", UTCDateTime(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("job_name", "slot"),
    )
    op.create_index("ix_job_locks_worker", "job_locks", ["worker_id"], unique=False)
    op.create_table(
        "job_runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_name", sa.String(length=200), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("scheduled_for", UTCDateTime(), nullable=True),
        sa.Column("run_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="1", nullable=False),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("fence", sa.BigInteger(), nullable=True),
        sa.Column("kwargs", sa.JSON(), nullable=False),
        sa.Column("enqueued_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column(
            "cancel_requested", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("correlation_id", sa.String(length=200), nullable=True),
        sa.Column("retry_of", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'lost', 'skipped')",
            name="ck_job_runs_status",
        ),
        sa.CheckConstraint(
            "trigger IN ('schedule', 'manual', 'retry')", name="ck_job_runs_trigger"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_name", "idempotency_key", name="uq_job_runs_idempotency"),
        sa.UniqueConstraint(
            "job_name", "scheduled_for", "attempt", name="uq_job_runs_slot_attempt"
        ),
    )
    op.create_index("ix_job_runs_enqueued", "job_runs", ["enqueued_at"], unique=False)
    op.create_index("ix_job_runs_job_slot", "job_runs", ["job_name", "scheduled_for"], unique=False)
    op.create_index(
        "ix_job_runs_queued",
        "job_runs",
        ["run_at"],
        unique=False,
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )
    op.create_index("ix_job_runs_status_worker", "job_runs", ["status", "worker_id"], unique=False)
    op.create_table(
        "jobrunner_jobs",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("published_by", sa.String(length=200), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "jobrunner_workers",
        sa.Column("worker_id", sa.String(length=200), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("jobs", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="running", nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id"),
    )


def downgrade() -> None:
    op.drop_table("jobrunner_workers")
    op.drop_table("jobrunner_jobs")
    op.drop_index("ix_job_runs_status_worker", table_name="job_runs")
    op.drop_index(
        "ix_job_runs_queued",
        table_name="job_runs",
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )
    op.drop_index("ix_job_runs_job_slot", table_name="job_runs")
    op.drop_index("ix_job_runs_enqueued", table_name="job_runs")
    op.drop_table("job_runs")
    op.drop_index("ix_job_locks_worker", table_name="job_locks")
    op.drop_table("job_locks")
