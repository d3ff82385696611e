"""runs keep their job's return value; the catalog publishes each job's parameters

- `job_runs.result` (JSON): a succeeded run's JSON-serialisable return value, up to
  `[worker] max_result_size`.
- `job_runs.result_note`: why a return value was not kept (not JSON, or too large); the
  outcome is recorded all the same.
- `job_runs.unique_digest` and its partial index: the digest of the kwargs of a run of a job
  with `unique_for`, so that an equal enqueue within the window finds it.
- `jobrunner_jobs.parameters` (JSON): the job function's keyword parameters, so that clients
  check an enqueue's kwargs without importing job code; NULL when a worker of an earlier
  version published the job.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_runs", sa.Column("result", sa.JSON(), nullable=True))
    op.add_column("job_runs", sa.Column("result_note", sa.String(300), nullable=True))
    op.add_column("jobrunner_jobs", sa.Column("parameters", sa.JSON(), nullable=True))
    op.add_column("job_runs", sa.Column("unique_digest", sa.String(64), nullable=True))
    unique = sa.text("unique_digest IS NOT NULL")
    op.create_index(
        "ix_job_runs_unique",
        "job_runs",
        ["job_name", "unique_digest", "enqueued_at"],
        postgresql_where=unique,
        sqlite_where=unique,
    )


def downgrade() -> None:
    op.drop_index("ix_job_runs_unique", table_name="job_runs")
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("unique_digest")
    with op.batch_alter_table("jobrunner_jobs") as batch:
        batch.drop_column("parameters")
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("result_note")
        batch.drop_column("result")
