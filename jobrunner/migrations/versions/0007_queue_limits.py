"""queues and limits: concurrency keys on runs and leases, rate-limit windows, served queues

- `job_runs.concurrency_key`: the value of the job's `concurrency_key` kwarg (or the
  enqueue's), NULL for a job without one.
- `job_locks.concurrency_key` ('' without a key) joins the primary key: the lease slots of a
  job with `max_per_key` are per key value.
- `job_rates`: per (job, key) the start times of the last `rate_limit` window and, while
  it is full, when it admits the next start.
- `jobrunner_workers.queues`: the queues a worker serves (NULL: every queue).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import Any

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
    lock_key = sa.Column(KEY, sa.String(200), nullable=False, server_default="")
    if op.get_context().dialect.name == "postgresql":
        op.add_column("job_locks", lock_key)
        op.drop_constraint("job_locks_pkey", "job_locks", type_="primary")
        op.create_primary_key("job_locks_pkey", "job_locks", ["job_name", KEY, "slot"])
    else:  # SQLite: the table is rebuilt with the new key
        _rebuild_locks(["job_name", KEY, "slot"])
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
    op.execute(sa.text("DELETE FROM job_locks WHERE concurrency_key <> ''"))
    if op.get_context().dialect.name == "postgresql":
        op.drop_constraint("job_locks_pkey", "job_locks", type_="primary")
        op.create_primary_key("job_locks_pkey", "job_locks", ["job_name", "slot"])
        op.drop_column("job_locks", KEY)
    else:
        _rebuild_locks(["job_name", "slot"])
    with op.batch_alter_table("jobrunner_workers") as batch:
        batch.drop_column("queues")
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column(KEY)


def _rebuild_locks(key: list[str]) -> None:
    """SQLite: `job_locks` again with primary key `key` (and the key column only if in it),
    its rows copied."""
    from jobrunner.store.tables import UTCDateTime

    columns: list[sa.Column[Any]] = [
        sa.Column("job_name", sa.String(200), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("worker_id", sa.String(200), nullable=True),
        sa.Column("fence", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("acquired_at", UTCDateTime(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        *(
            [sa.Column(KEY, sa.String(200), nullable=False, server_default="")]
            if KEY in key
            else []
        ),
    ]
    names = ", ".join(c.name for c in columns if c.name != KEY)
    op.create_table("job_locks_new", *columns, sa.PrimaryKeyConstraint(*key))
    op.execute(sa.text(f"INSERT INTO job_locks_new ({names}) SELECT {names} FROM job_locks"))
    op.drop_index("ix_job_locks_worker", table_name="job_locks")
    op.drop_table("job_locks")
    op.rename_table("job_locks_new", "job_locks")
    op.create_index("ix_job_locks_worker", "job_locks", ["worker_id"], unique=False)
