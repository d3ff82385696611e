"""fewer index entries per run: every change of a run's status writes a new entry into each
index on job_runs (a status change is never a HOT update), so the claim's start and the
outcome write paid for eight indexes

- ix_job_runs_job_slot (job_name, scheduled_for) is the prefix of uq_job_runs_slot_attempt
  (job_name, scheduled_for, attempt), which serves the same look-ups: dropped;
- ix_job_runs_status_worker (status, worker_id) served one query, the reaper's search for
  running runs without a lease: replaced by ix_job_runs_running (started_at) WHERE status =
  'running', which only runs entering `running` write to;
- ix_job_runs_correlation indexes only runs that have a correlation id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RUNNING = sa.text("status = 'running'")
CORRELATED = sa.text("correlation_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_job_runs_job_slot", table_name="job_runs")
    op.drop_index("ix_job_runs_status_worker", table_name="job_runs")
    op.create_index(
        "ix_job_runs_running",
        "job_runs",
        ["started_at"],
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    )
    op.drop_index("ix_job_runs_correlation", table_name="job_runs")
    op.create_index(
        "ix_job_runs_correlation",
        "job_runs",
        ["correlation_id"],
        postgresql_where=CORRELATED,
        sqlite_where=CORRELATED,
    )


def downgrade() -> None:
    op.drop_index("ix_job_runs_correlation", table_name="job_runs")
    op.create_index("ix_job_runs_correlation", "job_runs", ["correlation_id"])
    op.drop_index("ix_job_runs_running", table_name="job_runs")
    op.create_index("ix_job_runs_status_worker", "job_runs", ["status", "worker_id"])
    op.create_index("ix_job_runs_job_slot", "job_runs", ["job_name", "scheduled_for"])
