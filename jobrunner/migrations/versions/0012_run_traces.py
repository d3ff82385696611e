"""OpenTelemetry trace context on runs

- `job_runs.traceparent`: the W3C traceparent of the span that enqueued the run (the client
  stores the caller's current span with the `otel` extra); the run's span is its child.
- `job_runs.trace_link`: for a retry, the traceparent of the attempt before it, which the
  retry's span links to.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_runs", sa.Column("traceparent", sa.String(55), nullable=True))
    op.add_column("job_runs", sa.Column("trace_link", sa.String(55), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_runs") as batch:  # SQLite: the table is rebuilt
        batch.drop_column("trace_link")
        batch.drop_column("traceparent")
