"""Unique windows (`unique_for`): an enqueue with the kwargs of a run enqueued within the
window returns that run."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from jobrunner.records import Run
from jobrunner.store.engine import db_now
from jobrunner.store.sql import Op
from jobrunner.store.tables import job_runs


def kwargs_digest(kwargs: Mapping[str, Any]) -> str:
    """The SHA-256 of the kwargs as canonical JSON: equal kwargs, equal digest."""
    text = json.dumps(kwargs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def find_unique(dialect: str, job_name: str, digest: str, window: float) -> Op[Run | None]:
    """The newest run of the job with these kwargs enqueued within `window` seconds. On
    PostgreSQL a transaction-scoped advisory lock on (job, digest) makes equal enqueues wait
    for each other, so one inserts and the others find its run; SQLite serialises writers."""
    if dialect == "postgresql":
        lock = sa.func.hashtextextended(job_name + ":" + digest, 0)
        yield sa.select(sa.func.pg_advisory_xact_lock(lock))
    found = (
        yield sa.select(job_runs)
        .where(
            job_runs.c.job_name == job_name,
            job_runs.c.unique_digest == digest,
            job_runs.c.enqueued_at >= db_now(-window),
        )
        .order_by(job_runs.c.enqueued_at.desc())
        .limit(1)
    ).one_or_none()
    return None if found is None else Run(**found._mapping)
