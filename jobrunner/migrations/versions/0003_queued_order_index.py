"""index queued runs in claim order (run_at, id): a claim reads its batch off the index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    op.drop_index("ix_job_runs_queued", table_name="job_runs")
    op.create_index(
        "ix_job_runs_queued",
        "job_runs",
        ["run_at", "id"],
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )


def downgrade() -> None:
    op.drop_index("ix_job_runs_queued", table_name="job_runs")
    op.create_index(
        "ix_job_runs_queued", "job_runs", ["run_at"], postgresql_where=QUEUED, sqlite_where=QUEUED
    )
