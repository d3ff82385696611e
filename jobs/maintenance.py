"""Sync example jobs: they run in the worker's thread pool."""

from __future__ import annotations

import logging
import time

from jobrunner import JobContext

logger = logging.getLogger(__name__)


def cleanup(ctx: JobContext, older_than_days: int = 7) -> dict[str, int] | None:
    """Pretend to clean up; polls ctx.cancelled so a timeout or cancel stops it early. Its
    return value is stored on the run (`Run.result`)."""
    for _ in range(5):
        if ctx.cancelled.is_set():
            logger.info("cleanup cancelled")
            return None
        time.sleep(0.05)
    logger.info("cleanup done", extra={"older_than_days": older_than_days})
    return {"older_than_days": older_than_days}


def send_welcome_email(user_id: int, ctx: JobContext) -> dict[str, int]:
    """Only ever triggered (`jobrunner jobs trigger` or a client enqueue), never scheduled."""
    logger.info("welcome email sent to user %s", user_id)
    return {"sent_to": user_id}
