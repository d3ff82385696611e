"""Catch-up and slot planning: pure functions of an explicit `now` (no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobrunner.config import JobConfig, load_config
from jobrunner.policy import retry_delay
from jobrunner.worker.timetable import LEDGER_LIMIT, OVERDUE, Timetable, plan_slots

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def job(tmp_path: Path, **settings: object) -> JobConfig:
    lines = ["[[jobs]]", 'name = "j"', 'func = "builtins:print"']
    settings.setdefault("cron", "* * * * *")
    for key, value in settings.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    path = tmp_path / "jr.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path).jobs[0]


def states(plan_slots_result: object) -> list[tuple[str, str, str | None]]:
    return [
        (s.scheduled_for.strftime("%H:%M"), s.status, s.reason)
        for s in plan_slots_result.slots  # type: ignore[attr-defined]
    ]


def test_on_time_slot_is_queued(tmp_path: Path) -> None:
    plan = plan_slots(job(tmp_path), T0 - timedelta(seconds=30), T0 + timedelta(seconds=1))
    assert states(plan) == [("12:00", "queued", None)]


def test_slots_recorded_ahead_are_on_time_however_far_ahead(tmp_path: Path) -> None:
    """The worker records slots ahead of their time: lateness is judged against the clock,
    not the horizon, so a slot in the future is never treated as missed."""
    j = job(tmp_path, cron="* * * * * */2", catch_up="skip")
    now = T0 + timedelta(seconds=7)  # 12:00:00..12:00:06 are late by more than OVERDUE or not
    plan = plan_slots(j, T0 - timedelta(seconds=1), now, ahead=3 * OVERDUE)
    by_time = {s.scheduled_for: (s.status, s.reason) for s in plan.slots}
    assert by_time[T0] == ("skipped", "misfired")  # 7 s late
    assert by_time[T0 + timedelta(seconds=2)] == ("queued", None)  # 5 s late: on time
    future = [t for t in by_time if t > now]
    assert max(future) == T0 + timedelta(seconds=22)  # the horizon: 12:00:07 + 15 s
    assert all(by_time[t] == ("queued", None) for t in future)


def test_nothing_due_gives_nothing(tmp_path: Path) -> None:
    assert plan_slots(job(tmp_path), T0, T0 + timedelta(seconds=30)).slots == []


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("skip", ["skipped", "skipped", "skipped", "skipped", "skipped"]),
        ("latest", ["skipped", "skipped", "skipped", "skipped", "queued"]),
        ("all", ["queued", "queued", "queued", "queued", "queued"]),
    ],
)
def test_catch_up_policies_after_an_outage(
    tmp_path: Path, policy: str, expected: list[str]
) -> None:
    j = job(tmp_path, catch_up=policy, misfire_grace="1h")
    now = T0 + timedelta(minutes=4, seconds=30)  # slots 12:00..12:04 all missed
    plan = plan_slots(j, T0 - timedelta(seconds=1), now)
    assert [s for _, s, _ in states(plan)] == expected
    assert all(r == "misfired" for _, s, r in states(plan) if s == "skipped")


def test_latest_does_not_run_a_missed_slot_when_an_on_time_one_runs(tmp_path: Path) -> None:
    j = job(tmp_path, catch_up="latest", misfire_grace="1h")
    plan = plan_slots(j, T0 - timedelta(minutes=3), T0 + timedelta(seconds=1))
    assert states(plan) == [
        ("11:58", "skipped", "misfired"),
        ("11:59", "skipped", "misfired"),
        ("12:00", "queued", None),
    ]


def test_all_is_bounded_by_misfire_grace_and_max_catch_up(tmp_path: Path) -> None:
    j = job(tmp_path, catch_up="all", misfire_grace="10m", max_catch_up=3)
    now = T0 + timedelta(minutes=30, seconds=30)
    plan = plan_slots(j, T0 - timedelta(seconds=1), now)
    queued = [t for t, s, _ in states(plan) if s == "queued"]
    assert queued == ["12:28", "12:29", "12:30"]
    assert len(plan.slots) == 31  # every expected slot has a row


def test_latest_outside_misfire_grace_is_skipped(tmp_path: Path) -> None:
    j = job(tmp_path, catch_up="latest", misfire_grace="30s")
    plan = plan_slots(j, T0 - timedelta(seconds=1), T0 + timedelta(minutes=2, seconds=40))
    assert {s for _, s, _ in states(plan)} == {"skipped"}


def test_a_very_long_outage_records_a_bounded_ledger(tmp_path: Path) -> None:
    j = job(tmp_path, cron="* * * * * *", catch_up="skip", max_catch_up=5)
    plan = plan_slots(j, T0, T0 + timedelta(days=2))
    assert len(plan.slots) == LEDGER_LIMIT + 5
    assert plan.unrecorded > 0
    assert plan.slots[-1].scheduled_for == T0 + timedelta(days=2)


def test_jitter_delays_run_at_within_bound(tmp_path: Path) -> None:
    j = job(tmp_path, jitter="10s")
    plan = plan_slots(j, T0 - timedelta(seconds=1), T0 + timedelta(seconds=1), rand=lambda: 0.5)
    assert plan.slots[0].run_at == T0 + timedelta(seconds=5)


def test_overdue_threshold_separates_on_time_from_missed(tmp_path: Path) -> None:
    j = job(tmp_path, catch_up="skip")
    just = plan_slots(j, T0 - timedelta(seconds=1), T0 + OVERDUE)
    late = plan_slots(j, T0 - timedelta(seconds=1), T0 + OVERDUE + timedelta(seconds=1))
    assert states(just)[0][1] == "queued" and states(late)[0][1] == "skipped"


def test_timetable_orders_jobs_and_keeps_cursor_on_failure(tmp_path: Path) -> None:
    j = job(tmp_path, cron="*/5 * * * *")
    table = Timetable([j], {}, T0)
    assert table.next_due() == T0 + timedelta(minutes=5)
    assert table.due(T0 + timedelta(minutes=4)) == []
    due = table.due(T0 + timedelta(minutes=5))
    assert due == ["j"]
    table.retry_later(due)  # recording failed: the same slot is due again
    assert table.due(T0 + timedelta(minutes=6)) == ["j"]
    table.advance(["j"], T0 + timedelta(minutes=6))
    assert table.next_due() == T0 + timedelta(minutes=10)


def test_retry_delay_is_exponential_capped_and_jittered(tmp_path: Path) -> None:
    j = job(tmp_path, retry_backoff="10s", retry_backoff_max="1m")
    assert retry_delay(j, 1, rand=lambda: 0.5) == 10
    assert retry_delay(j, 3, rand=lambda: 0.5) == 40
    assert retry_delay(j, 10, rand=lambda: 0.5) == 60
    assert retry_delay(j, 1, rand=lambda: 0.0) == 7.5
    assert retry_delay(j, 1, rand=lambda: 1.0) == 12.5
