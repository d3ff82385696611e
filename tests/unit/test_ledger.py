"""The slot ledger behind `jobrunner why`: pure functions, explicit instants."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from jobrunner.ledger import (
    SlotReport,
    Surroundings,
    Window,
    account,
    collapse,
    explain,
    slot_window,
    summarize,
    why_no_row,
)
from jobrunner.records import CatalogEntry, Run, WorkerRow

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
JOB = CatalogEntry(name="tick", cron="* * * * *", timezone="UTC", config_hash="new", definition={})


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def run(slot: datetime, status: str, attempt: int = 1, **kw: Any) -> Run:
    values: dict[str, Any] = {
        "id": attempt * 1000 + slot.minute,
        "job_name": "tick",
        "trigger": "schedule" if attempt == 1 else "retry",
        "scheduled_for": slot,
        "run_at": slot,
        "status": status,
        "reason": None,
        "attempt": attempt,
        "max_attempts": 3,
        "worker_id": "w1" if status != "skipped" else None,
        "fence": None,
        "kwargs": {},
        "enqueued_at": slot,
        "started_at": None if status in ("queued", "skipped") else slot,
        "finished_at": None,
        "error": None,
        "cancel_requested": False,
        "idempotency_key": None,
        "correlation_id": None,
        "retry_of": None,
    }
    values.update(kw)
    return Run(**values)


def worker(jobs: dict[str, str], seen: datetime) -> WorkerRow:
    return WorkerRow(
        worker_id="w1",
        hostname="h",
        pid=1,
        version="0",
        config_hash="c",
        jobs=jobs,
        state="running",
        started_at=T0,
        last_seen=seen,
    )


def around(**kw: Any) -> Surroundings:
    base = Surroundings(
        now=minutes(10),
        job=JOB,
        first_slot=minutes(1),
        last_slot=minutes(8),
        workers=[worker({"tick": "new"}, minutes(10))],
        lease_ttl=timedelta(seconds=30),
        retention=None,
    )
    return dataclasses.replace(base, **kw)


def test_each_expected_slot_gets_one_report_with_what_became_of_it() -> None:
    failed_error = {"type": "ValueError", "message": "boom", "traceback": "..."}
    rows = [
        run(minutes(1), "succeeded"),
        run(minutes(2), "skipped", reason="overlap"),
        run(minutes(3), "failed", error=failed_error),
        run(minutes(3), "succeeded", attempt=2),
        run(minutes(4), "failed", error=failed_error),
        run(minutes(4), "queued", attempt=2),
        run(minutes(5), "running"),
        run(minutes(6), "skipped", reason="paused"),
        run(minutes(7), "lost", reason="lease expired"),
    ]
    reports = explain([minutes(i) for i in range(1, 8)], rows, around())
    got = [(r.state, r.outcome, r.reason, r.attempts) for r in reports]
    assert got == [
        ("ran", "succeeded", None, 1),
        ("skipped", "skipped", "overlap", 0),
        ("ran", "succeeded", None, 2),
        ("queued", "queued", "retry (attempt 2 of 3) queued", 1),
        ("running", "running", None, 1),
        ("skipped", "skipped", "paused", 0),
        ("ran", "lost", "lease expired", 1),
    ]
    assert reports[2].run_ids == (1003, 2003)
    assert summarize(reports) == {
        "ran: succeeded": 2,
        "ran: lost": 1,
        "skipped: overlap": 1,
        "skipped: paused": 1,
        "queued": 1,
        "running": 1,
    }


def test_a_failed_run_reports_its_error() -> None:
    row = run(minutes(1), "failed", error={"type": "KeyError", "message": "'x'"})
    (report,) = explain([minutes(1)], [row], around())
    assert (report.outcome, report.reason) == ("failed", "KeyError: 'x'")


def test_rows_of_an_earlier_cron_are_reported_as_unexpected() -> None:
    odd = minutes(2) + timedelta(seconds=30)
    reports = explain([minutes(2)], [run(minutes(2), "succeeded"), run(odd, "succeeded")], around())
    assert [(r.slot, r.state) for r in reports] == [(minutes(2), "ran"), (odd, "unexpected")]


def test_no_row_reasons() -> None:
    assert why_no_row(minutes(11), around()) == "not due yet"
    assert "due just now" in why_no_row(minutes(10) - timedelta(seconds=2), around())
    pruned = why_no_row(minutes(0), around(retention=timedelta(minutes=5)))
    assert pruned.startswith("pruned") and "5m" in pruned
    assert "the job did not exist yet" in why_no_row(minutes(0), around())
    assert "none yet" in why_no_row(minutes(5), around(first_slot=None, last_slot=None))
    assert "another cron" in why_no_row(minutes(5), around())  # a gap between recorded slots
    assert "see that worker's log" in why_no_row(minutes(9), around())


def test_no_row_after_the_last_recorded_slot_names_why_nobody_schedules() -> None:
    dead = around(workers=[worker({"tick": "new"}, minutes(9))])  # seen 60 s ago, ttl 30 s
    assert "no worker alive" in why_no_row(minutes(9), dead)
    assert "no worker alive" in why_no_row(minutes(9), around(workers=[]))
    other_jobs = around(workers=[worker({"other": "x"}, minutes(10))])
    assert "defines this job" in why_no_row(minutes(9), other_jobs)
    skewed = around(workers=[worker({"tick": "old"}, minutes(10))])
    assert "catalog's definition" in why_no_row(minutes(9), skewed)
    assert "(new)" in why_no_row(minutes(9), skewed) and "(old)" in why_no_row(minutes(9), skewed)
    before = why_no_row(minutes(0), around(workers=[]))
    assert "first recorded slot" in before and "no worker alive" in before


def test_a_window_holds_the_cron_slots_after_its_start_up_to_its_end() -> None:
    window = slot_window("* * * * *", ZoneInfo("UTC"), minutes(1), minutes(4))
    assert window.expected == [minutes(2), minutes(3), minutes(4)]
    assert (window.start, window.end, window.truncated) == (minutes(1), minutes(4), False)


def test_a_window_over_the_limit_keeps_the_newest_slots_and_starts_before_them() -> None:
    exact = slot_window("* * * * *", ZoneInfo("UTC"), minutes(0), minutes(3), limit=3)
    assert exact.expected == [minutes(1), minutes(2), minutes(3)] and not exact.truncated
    over = slot_window("* * * * *", ZoneInfo("UTC"), minutes(0), minutes(5), limit=3)
    assert over.expected == [minutes(3), minutes(4), minutes(5)] and over.truncated
    assert over.start == minutes(3) - timedelta(microseconds=1)


def test_a_window_follows_the_zone_of_the_cron() -> None:
    # 08:00 in Berlin (UTC+2 in May) is 06:00 UTC
    day = slot_window("0 8 * * *", ZoneInfo("Europe/Berlin"), T0 - timedelta(days=1), T0)
    assert day.expected == [datetime(2026, 5, 1, 6, 0, tzinfo=UTC)]


def test_the_ledger_leaves_out_rows_at_or_before_the_window_start() -> None:
    window = Window(
        expected=[minutes(2), minutes(3)], start=minutes(1), end=minutes(3), truncated=False
    )
    rows = [run(minutes(1), "succeeded"), run(minutes(2), "succeeded"), run(minutes(3), "failed")]
    ledger = account(window, rows, around())
    assert [(r.slot, r.state, r.outcome) for r in ledger.reports] == [
        (minutes(2), "ran", "succeeded"),
        (minutes(3), "ran", "failed"),
    ]
    assert ledger.summary == {"ran: succeeded": 1, "ran: failed": 1}


def test_the_ledger_as_json() -> None:
    window = Window(
        expected=[minutes(2), minutes(3)], start=minutes(1), end=minutes(3), truncated=True
    )
    data = account(window, [run(minutes(2), "succeeded")], around()).as_dict()
    assert {k: v for k, v in data.items() if k != "slots"} == {
        "job": "tick",
        "cron": "* * * * *",
        "timezone": "UTC",
        "paused": False,
        "since": minutes(1).isoformat(),
        "until": minutes(3).isoformat(),
        "truncated": True,
        "expected": 2,
        "summary": {"ran: succeeded": 1, "no row": 1},
    }
    assert [s["state"] for s in data["slots"]] == ["ran", "no row"]
    assert data["slots"][0]["run_ids"] == [1002]


def test_consecutive_slots_without_a_row_for_one_reason_collapse_into_one_group() -> None:
    def report(n: int, state: Any, reason: str | None = None) -> SlotReport:
        return SlotReport(slot=minutes(n), state=state, reason=reason)

    reports = [
        report(1, "no row", "gone"),
        report(2, "no row", "gone"),
        report(3, "ran", "gone"),  # a slot with a row ends the group, whatever its reason
        report(4, "no row", "gone"),
        report(5, "no row", "other"),
        report(6, "no row", "other"),
    ]
    groups = collapse(reports)
    assert [[r.slot.minute for r in g] for g in groups] == [[1, 2], [3], [4], [5, 6]]
    assert collapse([]) == []
