"""queues and limits: concurrency keys on runs and leases, rate-limit windows, served queues

- `job_runs.concurrency_key`: the value of the job's `concurrency_key` kwarg (or the
  enqueue's), NULL for a job without one.
- `job_locks.job_name` widens to 401 characters: the lease slots of a job with `max_per_key`
  are per key value, named "JOB\x1fKEY". The primary key stays (job_name, slot), so workers of
  the previous version (whose lease insert names that conflict target) keep working beside it.
- `job_rates`: per (job, key) the start times of the last `rate_limit` window and, while
  it is full, when it admits the next start.
- `jobrunner_workers.queues`: the queues a worker serves (NULL: every queue).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

KEY = "concurrency_key"


def upgrade() -> None:
    from jobrunner.store.tables import UTCDateTime

    op.add_column("job_runs", sa.Column(KEY, sa.String(200), nullable=True))
    op.add_column("jobrunner_workers", sa.Column("queues", sa.JSON(), nullable=True))
    with op.batch_alter_table("job_locks") as batch:  # SQLite: the table is rebuilt
        batch.alter_column("job_name", type_=sa.String(401), existing_nullable=False)
    op.create_table(
        "job_rates",
        sa.Column("job_name", sa.String(200), nullable=False),
        sa.Column(KEY, sa.String(200), nullable=False, server_default=""),
        sa.Column("starts", sa.JSON(), nullable=False),
        sa.Column("blocked_until", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("job_name", KEY),
    )


def downgrade() -> None:
    op.drop_table("job_rates")
    locks = sa.table("job_locks", sa.column("job_name", sa.String()))
    op.execute(locks.delete().where(locks.c.job_name.contains("\x1f")))  # keyed leases
    with op.batch_alter_table("job_locks") as batch:
        batch.alter_column("job_name", type_=sa.String(200), existing_nullable=False)
    with op.batch_alter_table("jobrunner_workers") as batch:
        batch.drop_column("queues")
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column(KEY)
