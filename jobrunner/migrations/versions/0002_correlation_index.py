"""index job_runs.correlation_id (runs list --correlation-id, GET /runs?correlation_id=)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_job_runs_correlation", "job_runs", ["correlation_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_runs_correlation", table_name="job_runs")
