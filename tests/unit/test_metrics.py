"""Metrics: every documented name and label appears in the exposition after the worker's calls."""

from __future__ import annotations

import random
import re
import time

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from jobrunner.worker.metrics import Metrics
from tests.support import ROOT


def samples(metrics: Metrics) -> list[Sample]:
    body, _ = metrics.render()
    return [s for f in text_string_to_metric_families(body.decode()) for s in f.samples]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = [s.value for s in samples(metrics) if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


def test_worker_info_carries_id_version_and_config_hash() -> None:
    m = Metrics("host-1-ab", "0.1.0", "0123456789abcdef")
    labels = {"worker_id": "host-1-ab", "version": "0.1.0", "config_hash": "0123456789abcdef"}
    assert value(m, "jobrunner_worker_info", **labels) == 1


def test_content_type_is_prometheus_text() -> None:
    body, content_type = Metrics("w", "v", "h").render()
    assert content_type.startswith("text/plain; version=")
    assert body.endswith(b"\n")


def test_run_finished_counts_by_job_and_status_and_observes_duration() -> None:
    m = Metrics("w", "v", "h")
    m.run_finished("report", "succeeded", 0.2)
    m.run_finished("report", "succeeded", 3.0)
    m.run_finished("report", "failed", 0.5)
    assert value(m, "jobrunner_runs_total", job="report", status="succeeded") == 2
    assert value(m, "jobrunner_runs_total", job="report", status="failed") == 1
    assert value(m, "jobrunner_run_duration_seconds_count", job="report") == 3
    assert value(m, "jobrunner_run_duration_seconds_sum", job="report") == 3.7
    assert value(m, "jobrunner_run_duration_seconds_bucket", job="report", le="1.0") == 2


def test_last_success_is_set_only_by_a_success() -> None:
    m = Metrics("w", "v", "h")
    m.run_finished("a", "failed", 1)
    names = {(s.name, s.labels.get("job")) for s in samples(m)}
    assert ("jobrunner_last_success_timestamp_seconds", "a") not in names
    m.run_finished("a", "succeeded", 1)
    assert abs(value(m, "jobrunner_last_success_timestamp_seconds", job="a") - time.time()) < 5
    m.set_last_success("b", 1_700_000_000.0)
    assert value(m, "jobrunner_last_success_timestamp_seconds", job="b") == 1_700_000_000.0


def test_fire_lag_only_for_scheduled_runs_and_never_negative() -> None:
    m = Metrics("w", "v", "h")
    m.run_started("tick", 0.004)
    m.run_started("tick", -0.002)  # clock offset between host and database
    m.run_started("manual-only", None)
    assert value(m, "jobrunner_fire_lag_seconds_count", job="tick") == 2
    assert value(m, "jobrunner_fire_lag_seconds_bucket", job="tick", le="0.001") == 1
    assert value(m, "jobrunner_fire_lag_seconds_bucket", job="tick", le="0.005") == 2
    assert value(m, "jobrunner_fire_lag_seconds_sum", job="tick") == 0.004
    assert not [s for s in samples(m) if s.labels.get("job") == "manual-only"]


def test_fire_lag_buckets_span_one_millisecond_to_a_minute() -> None:
    m = Metrics("w", "v", "h")
    m.run_started("tick", 0.0)
    bounds = [
        float(s.labels["le"])
        for s in samples(m)
        if s.name == "jobrunner_fire_lag_seconds_bucket" and s.labels["le"] != "+Inf"
    ]
    assert min(bounds) == 0.001 and max(bounds) == 60.0


def test_skips_db_errors_and_gauges() -> None:
    m = Metrics("w", "v", "h")
    m.slot_skipped("report", "overlap")
    m.slot_skipped("report", "overlap")
    m.slot_skipped("report", "misfired")
    m.db_error()
    m.set_running(3)
    m.set_leases(4)
    m.set_queue_depth({("default", "0"): 7, ("heavy", "above 0"): 2})
    m.set_queue_depth({("default", "0"): 7})  # a queue emptied reads nothing
    m.set_unserved({"heavy": ["render", "encode"]})
    m.set_running(2)
    assert value(m, "jobrunner_slots_skipped_total", job="report", reason="overlap") == 2
    assert value(m, "jobrunner_slots_skipped_total", job="report", reason="misfired") == 1
    assert value(m, "jobrunner_db_errors_total") == 1
    assert value(m, "jobrunner_runs_running") == 2
    assert value(m, "jobrunner_leases_held") == 4
    assert value(m, "jobrunner_queue_depth", queue="default", priority="0") == 7
    assert value(m, "jobrunner_queue_unserved", queue="heavy") == 2
    m.set_unserved({})
    with pytest.raises(AssertionError):
        value(m, "jobrunner_queue_unserved", queue="heavy")


def test_each_instance_has_its_own_registry() -> None:
    a, b = Metrics("a", "v", "h"), Metrics("b", "v", "h")
    a.db_error()
    assert value(a, "jobrunner_db_errors_total") == 1
    assert value(b, "jobrunner_db_errors_total") == 0
    assert "jobrunner_worker_info" not in {
        s.name for s in samples(b) if s.labels.get("worker_id") == "a"
    }


def test_every_documented_metric_is_exported() -> None:
    """docs/operations.md lists these; the issue requires them."""
    m = Metrics("w", "v", "h")
    m.run_started("j", 0.1)
    m.run_finished("j", "succeeded", 0.1)
    m.slot_skipped("j", "overlap")
    names = {s.name for s in samples(m)}
    for name in (
        "jobrunner_worker_info",
        "jobrunner_runs_total",
        "jobrunner_run_duration_seconds_bucket",
        "jobrunner_fire_lag_seconds_bucket",
        "jobrunner_slots_skipped_total",
        "jobrunner_last_success_timestamp_seconds",
        "jobrunner_leases_held",
        "jobrunner_runs_running",
        "jobrunner_queue_depth",
        "jobrunner_db_errors_total",
    ):
        assert name in names, name


def test_operations_guide_names_only_exported_metrics() -> None:
    """Every `jobrunner_*` metric the guide and its alerts use exists, and every exported one
    is documented."""
    m = Metrics("w", "v", "h")
    m.run_started("j", 0.1)
    m.run_finished("j", "succeeded", 0.1)
    m.slot_skipped("j", "overlap")
    body, _ = m.render()
    families = list(text_string_to_metric_families(body.decode()))
    exported = {s.name for f in families for s in f.samples}
    documented = {
        f.name + ("_total" if f.type == "counter" else "")
        for f in families
        if not f.name.endswith("_created")
    }
    text = (ROOT / "docs" / "operations.md").read_text()
    mentioned = set(re.findall(r"\bjobrunner_[a-z_]+[a-z]", text))
    tables = {"jobrunner_jobs", "jobrunner_workers", "jobrunner_alembic_version"}
    metrics = mentioned - tables
    assert metrics, "the guide documents the metrics"
    assert metrics <= exported | documented, sorted(metrics - exported - documented)
    assert documented <= metrics, sorted(documented - metrics)


def test_per_job_histograms_expose_what_prometheus_client_would() -> None:
    """The per-job series are plain numbers turned into families at scrape time: their
    samples equal those of prometheus-client's own Histogram and Counter fed the same runs,
    bucket bounds included (a value equal to a bound falls in that bucket)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from jobrunner.worker.metrics import DURATION_BUCKETS

    reference = CollectorRegistry()
    hist = Histogram("jobrunner_run_duration_seconds", "d", ["job"], buckets=DURATION_BUCKETS,
                     registry=reference)  # fmt: skip
    runs = Counter("jobrunner_runs", "r", ["job", "status"], registry=reference)
    m = Metrics("w", "v", "h")
    rng = random.Random(7)
    values = [*DURATION_BUCKETS, 0.0, 7200.0] + [rng.expovariate(0.5) for _ in range(300)]
    for i, duration in enumerate(values):
        job, status = f"job-{i % 3}", ("succeeded", "failed")[i % 2]
        m.run_finished(job, status, duration)
        hist.labels(job).observe(duration)
        runs.labels(job, status).inc()

    def kept(samples_: list[Sample]) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {
            (s.name, tuple(sorted(s.labels.items())), round(s.value, 9))
            for s in samples_
            if s.name.startswith(("jobrunner_run_duration_seconds", "jobrunner_runs_total"))
            and not s.name.endswith("_created")
        }

    body = generate_latest(reference).decode()
    expected = [s for f in text_string_to_metric_families(body) for s in f.samples]
    assert kept(samples(m)) == kept(expected)
    assert value(m, "jobrunner_run_duration_seconds_bucket", job="job-0", le="0.005") >= 1
