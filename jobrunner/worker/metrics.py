"""Prometheus metrics of one worker process, in a registry of its own.

The worker calls the methods below; the HTTP server (`jobrunner.worker.http`) serves `render()` at
`/metrics`. The per-run methods (`run_started`, `run_finished`) are called by the worker's
event loop only (they update plain numbers, see `_PerJob`); the others go to prometheus-client
metrics, which any thread may touch. docs/operations.md says what each metric means and gives
example alerts.
"""

from __future__ import annotations

import bisect
import functools
import math
import time
from collections.abc import Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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


class _Buckets:
    """One histogram series as plain numbers: counts per bucket (not cumulative), sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def exposed(self) -> list[tuple[str, float]]:
        """(le, cumulative count) per bucket, +Inf last, as Prometheus expects them."""
        out, total = [], 0
        for le, count in zip(_le_labels(self.bounds), list(self.counts), strict=True):
            total += count
            out.append((le, float(total)))
        return out


@functools.cache
def _le_labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The `le` label of each bucket, +Inf last, spelled as prometheus-client spells them."""
    return tuple(floatToGoString(b) for b in (*bounds, math.inf))  # type: ignore[no-untyped-call]


def _series(table: dict[str, _Buckets], job: str, bounds: tuple[float, ...]) -> _Buckets:
    """The histogram series of `job` in `table`, made on first use."""
    series = table.get(job)
    if series is None:
        series = table[job] = _Buckets(bounds)
    return series


class _PerJob(Collector):
    """The per-job series (runs by status, duration, fire lag, last success) as plain numbers,
    turned into metric families when scraped.

    A worker updates them once or twice per run; prometheus-client's labelled metrics cost
    about 5 us per finished run (a lock per value) and about 40 us per job and histogram to
    create, which 10,000 jobs paid at their first minute. Written by the worker's event loop
    only; a scrape (another thread) reads copies, taken in one step each under the GIL.
    """

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], int] = {}
        self.durations: dict[str, _Buckets] = {}
        self.fire_lags: dict[str, _Buckets] = {}
        self.last_success: dict[str, float] = {}

    def duration(self, job: str) -> _Buckets:
        return _series(self.durations, job, DURATION_BUCKETS)

    def fire_lag(self, job: str) -> _Buckets:
        return _series(self.fire_lags, job, FIRE_LAG_BUCKETS)

    def collect(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "jobrunner_runs", "Runs finished by this worker, by job and final status.",
            labels=["job", "status"],
        )  # fmt: skip
        for (job, status), count in list(self.runs.items()):
            runs.add_metric([job, status], count)
        yield runs
        for name, doc, series in (
            (
                "jobrunner_run_duration_seconds",
                "Wall time of runs finished by this worker.",
                self.durations,
            ),
            (
                "jobrunner_fire_lag_seconds",
                "Scheduled runs: seconds from the scheduled time to the start.",
                self.fire_lags,
            ),
        ):
            family = HistogramMetricFamily(name, doc, labels=["job"])
            for job, buckets in list(series.items()):
                family.add_metric([job], buckets.exposed(), buckets.sum)
            yield family
        last = GaugeMetricFamily(
            "jobrunner_last_success_timestamp_seconds",
            "Unix time of the last run of the job that succeeded on this worker.",
            labels=["job"],
        )
        for job, at in list(self.last_success.items()):
            last.add_metric([job], at)
        yield last


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
        self._per_job = _PerJob()
        r.register(self._per_job)
        self._skipped = Counter(
            "jobrunner_slots_skipped_total",
            "Slots this worker recorded as skipped, by job and reason.",
            ["job", "reason"],
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
            "Queued runs that are due now in the whole database, by queue and priority class "
            "('above 0', '0', 'below 0'), as seen by this worker.",
            ["queue", "priority"],
            registry=r,
        )
        self._queue_depth.labels(queue="default", priority="0").set(0)  # until counted
        self._unserved = Gauge(
            "jobrunner_queue_unserved",
            "1 for a queue with jobs in the catalog that no live worker serves (its runs "
            "wait); the value is the number of its jobs.",
            ["queue"],
            registry=r,
        )
        self._db_errors = Counter(
            "jobrunner_db_errors_total",
            "Database calls of this worker that failed (each is retried with backoff).",
            registry=r,
        )
        self._notify = Counter(
            "jobrunner_notifications_total",
            "Notification deliveries by target and result: sent, failed (an attempt that will "
            "be retried with backoff), dropped (kept too long without a delivery).",
            ["target", "result"],
            registry=r,
        )
        self._deadline_stops = Counter(
            "jobrunner_renew_deadline_stops_total",
            "Runs this worker stopped because their lease was not renewed in time "
            "(a partition or an outage longer than the renew deadline), by job.",
            ["job"],
            registry=r,
        )

    def run_started(self, job: str, fire_lag: float | None) -> None:
        """A run started; `fire_lag` (seconds from the scheduled time) only for scheduled runs."""
        if fire_lag is not None:
            # A small negative lag is host-vs-database clock offset, not a run that started early.
            self._per_job.fire_lag(job).observe(max(fire_lag, 0.0))

    def run_finished(self, job: str, status: str, duration: float) -> None:
        """A run ended with `status` after `duration` seconds."""
        stats = self._per_job
        key = (job, status)
        stats.runs[key] = stats.runs.get(key, 0) + 1
        stats.duration(job).observe(max(duration, 0.0))
        if status == "succeeded":
            stats.last_success[job] = time.time()

    def set_last_success(self, job: str, timestamp: float) -> None:
        """Seed the last success of `job` (Unix time), e.g. from run history at start."""
        self._per_job.last_success[job] = timestamp

    def slot_skipped(self, job: str, reason: str) -> None:
        self._skipped.labels(job=job, reason=reason).inc()

    def deadline_stop(self, job: str) -> None:
        self._deadline_stops.labels(job=job).inc()

    def db_error(self) -> None:
        self._db_errors.inc()

    def notify_sent(self, target: str) -> None:
        self._notify.labels(target=target, result="sent").inc()

    def notify_failed(self, target: str) -> None:
        self._notify.labels(target=target, result="failed").inc()

    def notify_dropped(self, target: str) -> None:
        self._notify.labels(target=target, result="dropped").inc()

    def set_running(self, n: int) -> None:
        self._running.set(n)

    def set_leases(self, n: int) -> None:
        self._leases.set(n)

    def set_queue_depth(self, depth: Mapping[tuple[str, str], int]) -> None:
        """Due queued runs by (queue, priority class); the default queue reads 0 when empty."""
        self._queue_depth.clear()
        for (queue, priority), n in (depth or {("default", "0"): 0}).items():
            self._queue_depth.labels(queue=queue, priority=priority).set(n)

    def set_unserved(self, unserved: Mapping[str, list[str]]) -> None:
        self._unserved.clear()
        for queue, jobs in unserved.items():
            self._unserved.labels(queue=queue).set(len(jobs))

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
