"""runs get a priority (higher first); the claim order index leads with it

`job_runs.priority` (integer, default 0): set from the job's `priority` or the enqueue's,
copied to retries. Claims take the highest priority first, then the oldest, off the index
(priority DESC, run_at, id) of queued runs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    op.add_column(
        "job_runs", sa.Column("priority", sa.Integer(), nullable=False, server_default="0")
    )
    op.drop_index("ix_job_runs_queued", table_name="job_runs")
    op.create_index(
        "ix_job_runs_queued",
        "job_runs",
        [sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )


def downgrade() -> None:
    op.drop_index("ix_job_runs_queued", table_name="job_runs")
    op.create_index(
        "ix_job_runs_queued",
        "job_runs",
        ["run_at", "id"],
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("priority")
