"""the retries of a run found by index

- `ix_job_runs_retry_of`: a partial index on `job_runs.retry_of` (only retries have one), so
  that a manual run's attempts (`runs show`, the dashboard's run page) are not a scan of the
  history: 60 ms at 1,000,000 rows before it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

RETRIES = sa.text("retry_of IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_job_runs_retry_of",
        "job_runs",
        ["retry_of"],
        postgresql_where=RETRIES,
        sqlite_where=RETRIES,
    )


def downgrade() -> None:
    op.drop_index("ix_job_runs_retry_of", table_name="job_runs")
