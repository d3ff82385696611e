"""Prometheus metrics of one worker process, in a registry of its own.

The worker calls the methods below; the HTTP server (`jobrunner.http`) serves `render()` at
`/metrics`. prometheus-client metrics are thread-safe, so the worker loop, the job threads and
the HTTP threads may all touch them. docs/operations.md says what each metric means and gives
example alerts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

__all__ = ["DURATION_BUCKETS", "FIRE_LAG_BUCKETS", "Metrics"]

# Scheduled time -> start: sub-millisecond when healthy, seconds when the worker is saturated
# or a database call was slow; a minute or more is a missed slot.
FIRE_LAG_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# Run durations: from no-op jobs (milliseconds) to long batch jobs (an hour).
DURATION_BUCKETS = (
    0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
)  # fmt: skip


class Metrics:
    """The metrics one worker exports; names and labels are documented in operations.md."""

    def __init__(self, worker_id: str, version: str, config_hash: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Info(
            "jobrunner_worker",
            "This worker: its id, jobrunner version and config hash (value is always 1).",
            registry=r,
        ).info({"worker_id": worker_id, "version": version, "config_hash": config_hash})
        self._runs = Counter(
            "jobrunner_runs_total",
            "Runs finished by this worker, by job and final status.",
            ["job", "status"],
            registry=r,
        )
        self._duration = Histogram(
            "jobrunner_run_duration_seconds",
            "Wall time of runs finished by this worker.",
            ["job"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._fire_lag = Histogram(
            "jobrunner_fire_lag_seconds",
            "Scheduled runs: seconds from the scheduled time to the start.",
            ["job"],
            buckets=FIRE_LAG_BUCKETS,
            registry=r,
        )
        self._skipped = Counter(
            "jobrunner_slots_skipped_total",
            "Slots this worker recorded as skipped, by job and reason.",
            ["job", "reason"],
            registry=r,
        )
        self._last_success = Gauge(
            "jobrunner_last_success_timestamp_seconds",
            "Unix time of the last run of the job that succeeded on this worker.",
            ["job"],
            registry=r,
        )
        self._leases = Gauge(
            "jobrunner_leases_held",
            "Leases this worker holds (as of its last heartbeat).",
            registry=r,
        )
        self._running = Gauge(
            "jobrunner_runs_running", "Runs executing in this worker now.", registry=r
        )
        self._queue_depth = Gauge(
            "jobrunner_queue_depth",
            "Queued runs that are due now, in the whole database (as seen by this worker).",
            registry=r,
        )
        self._db_errors = Counter(
            "jobrunner_db_errors_total",
            "Database calls of this worker that failed (each is retried with backoff).",
            registry=r,
        )

        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set (a run touches three)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def prepare(self, jobs: Iterable[tuple[str, bool]]) -> None:
        """Create the series of `(job, scheduled)` now, at zero: a histogram's first use for a
        job costs about 40 us, which 10,000 jobs would otherwise pay at their first minute.
        The last-success gauge is left to the first success (its alert reads its absence)."""
        for job, scheduled in jobs:
            self._child(self._runs, job, "succeeded")
            self._child(self._duration, job)
            if scheduled:
                self._child(self._fire_lag, job)

    def run_started(self, job: str, fire_lag: float | None) -> None:
        """A run started; `fire_lag` (seconds from the scheduled time) only for scheduled runs."""
        if fire_lag is not None:
            # A small negative lag is host-vs-database clock offset, not a run that started early.
            self._child(self._fire_lag, job).observe(max(fire_lag, 0.0))

    def run_finished(self, job: str, status: str, duration: float) -> None:
        """A run ended with `status` after `duration` seconds."""
        self._child(self._runs, job, status).inc()
        self._child(self._duration, job).observe(max(duration, 0.0))
        if status == "succeeded":
            self._child(self._last_success, job).set_to_current_time()

    def set_last_success(self, job: str, timestamp: float) -> None:
        """Seed the last success of `job` (Unix time), e.g. from run history at start."""
        self._last_success.labels(job=job).set(timestamp)

    def slot_skipped(self, job: str, reason: str) -> None:
        self._skipped.labels(job=job, reason=reason).inc()

    def db_error(self) -> None:
        self._db_errors.inc()

    def set_running(self, n: int) -> None:
        self._running.set(n)

    def set_leases(self, n: int) -> None:
        self._leases.set(n)

    def set_queue_depth(self, n: int) -> None:
        self._queue_depth.set(n)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
