"""the notification outbox

- `jobrunner_outbox`: one row per (event, target) of `[[notify]]`, written in the transaction
  of the outcome or skip decision that caused it, with a stable `event_id`; delivered at
  least once by any replica that knows the target, retried with backoff, and recorded
  `dropped` when it could not be delivered within its keeping time.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobrunner.store.tables import BigId, UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobrunner_outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("job_name", sa.String(200), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(300), nullable=True),
        sa.UniqueConstraint("event_id", "target", name="uq_outbox_event_target"),
    )
    pending = sa.text("status = 'pending'")
    op.create_index(
        "ix_outbox_pending",
        "jobrunner_outbox",
        ["next_attempt_at"],
        postgresql_where=pending,
        sqlite_where=pending,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_pending", table_name="jobrunner_outbox")
    op.drop_table("jobrunner_outbox")
