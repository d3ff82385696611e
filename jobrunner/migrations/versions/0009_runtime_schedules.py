"""schedules an app creates at runtime, through the same slot ledger

- `jobrunner_schedules`: one row per (job, key), with its cron, zone, kwargs, catch-up and
  overlap overrides, status, version, the cursor up to which its slots are recorded and its
  next fire time (a partial index: the planner reads only what is due soon).
- `job_runs.schedule_key` ('' for every run but a runtime schedule's slot),
  `schedule_version` (which version of the schedule decided the slot) and `overlap` (the
  schedule's override). The slot key becomes (job_name, schedule_key, scheduled_for,
  attempt): one start per slot of each schedule.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobrunner.store.tables import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SCHEDULED = sa.text("scheduled_for IS NOT NULL")
LIVE = sa.text("next_fire_at IS NOT NULL")


def upgrade() -> None:
    op.add_column(
        "job_runs", sa.Column("schedule_key", sa.String(200), nullable=False, server_default="")
    )
    op.add_column("job_runs", sa.Column("schedule_version", sa.Integer(), nullable=True))
    op.add_column("job_runs", sa.Column("overlap", sa.String(8), nullable=True))
    op.drop_index("uq_job_runs_slot_attempt", table_name="job_runs")
    op.create_index(
        "uq_job_runs_slot_attempt",
        "job_runs",
        ["job_name", "schedule_key", "scheduled_for", "attempt"],
        unique=True,
        postgresql_where=SCHEDULED,
        sqlite_where=SCHEDULED,
    )
    op.create_table(
        "jobrunner_schedules",
        sa.Column("job_name", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("kwargs", sa.JSON(), nullable=False),
        sa.Column("catch_up", sa.String(8), nullable=True),
        sa.Column("overlap", sa.String(8), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("status_note", sa.String(200), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("cursor", UTCDateTime(), nullable=False),
        sa.Column("next_fire_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'paused', 'deleted', 'retired')", name="ck_schedules_status"
        ),
    )
    op.create_index(
        "ix_schedules_next_fire",
        "jobrunner_schedules",
        ["next_fire_at"],
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )


def downgrade() -> None:
    op.drop_index("ix_schedules_next_fire", table_name="jobrunner_schedules")
    op.drop_table("jobrunner_schedules")
    # The runtime schedules' slots go with them: under the older slot key, two schedules'
    # slots of one job at one instant would collide.
    op.execute("DELETE FROM job_runs WHERE schedule_key <> ''")
    op.drop_index("uq_job_runs_slot_attempt", table_name="job_runs")
    op.create_index(
        "uq_job_runs_slot_attempt",
        "job_runs",
        ["job_name", "scheduled_for", "attempt"],
        unique=True,
        postgresql_where=SCHEDULED,
        sqlite_where=SCHEDULED,
    )
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("overlap")
        batch.drop_column("schedule_version")
        batch.drop_column("schedule_key")
