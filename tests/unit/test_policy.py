"""Claim decisions and retry decisions: pure functions, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from jobrunner.policy import decide_claim, retry_after
from jobrunner.records import Lease, Policy, Run

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FORBID = Policy(overlap="forbid", misfire_grace=60)
ALLOW2 = Policy(overlap="allow", max_concurrency=2, misfire_grace=60)
REPLACE = Policy(overlap="replace", misfire_grace=60)


def run(
    run_id: int, job: str = "j", *, trigger: str = "schedule", late: float = 0.0, **kw: Any
) -> Run:
    at = NOW - timedelta(seconds=late)
    values: dict[str, Any] = {
        "id": run_id,
        "job_name": job,
        "trigger": trigger,
        "scheduled_for": at if trigger == "schedule" else None,
        "run_at": at,
        "status": "queued",
        "reason": None,
        "attempt": 1,
        "max_attempts": 1,
        "worker_id": None,
        "fence": None,
        "kwargs": {},
        "enqueued_at": at,
        "started_at": None,
        "finished_at": None,
        "error": None,
        "cancel_requested": False,
        "idempotency_key": None,
        "correlation_id": None,
        "retry_of": None,
    }
    values.update(kw)
    return Run(**values)


def lease(job: str = "j", slot: int = 0, run_id: int = 99, fence: int = 5) -> Lease:
    return Lease(job_name=job, slot=slot, run_id=run_id, fence=fence)


def ids(pairs: list[tuple[Run, Any]]) -> list[tuple[int, Any]]:
    return [(r.id, x) for r, x in pairs]


def test_a_free_job_starts_its_due_run_on_slot_zero() -> None:
    d = decide_claim([(run(1), False)], {}, {"j": FORBID}, NOW)
    assert ids(d.start) == [(1, 0)] and d.skip == [] and d.waiting == 0


def test_paused_and_misfired_slots_are_skipped_with_their_reason() -> None:
    late = run(2, "k", late=61)
    d = decide_claim([(run(1), True), (late, False)], {}, {"j": FORBID, "k": FORBID}, NOW)
    assert ids(d.skip) == [(1, "paused"), (2, "misfired")] and d.start == []


def test_a_paused_job_still_runs_its_manual_runs() -> None:
    d = decide_claim([(run(1, trigger="manual"), True)], {}, {"j": FORBID}, NOW)
    assert ids(d.start) == [(1, 0)]


def test_forbid_skips_a_slot_while_a_run_from_before_holds_the_lease() -> None:
    d = decide_claim([(run(1), False)], {("j", ""): {0: lease()}}, {"j": FORBID}, NOW)
    assert ids(d.skip) == [(1, "overlap")]


def test_slots_behind_one_of_the_same_claim_wait_instead_of_skipping() -> None:
    d = decide_claim([(run(1), False), (run(2), False)], {}, {"j": FORBID}, NOW)
    assert ids(d.start) == [(1, 0)] and d.skip == [] and d.waiting == 1


def test_catch_up_slots_and_manual_runs_wait_for_the_holder() -> None:
    held = {("j", ""): {0: lease()}}
    catch_up = run(1, reason="catch-up")
    manual = run(2, trigger="manual")
    d = decide_claim([(catch_up, False), (manual, False)], held, {"j": FORBID}, NOW)
    assert d.start == [] and d.skip == [] and d.waiting == 2


def test_allow_fills_free_slots_up_to_max_concurrency() -> None:
    held = {("j", ""): {0: lease()}}
    runs = [(run(i, trigger="manual"), False) for i in (1, 2, 3)]
    d = decide_claim(runs, held, {"j": ALLOW2}, NOW)
    assert ids(d.start) == [(1, 1)] and d.waiting == 2


def test_replace_takes_the_holders_lease_once_per_claim() -> None:
    held = {("j", ""): {0: lease()}}
    d = decide_claim([(run(1), False), (run(2), False)], held, {"j": REPLACE}, NOW)
    assert ids(d.replace) == [(1, lease())] and d.waiting == 1 and d.skip == []


def test_a_run_claimed_ahead_only_takes_a_free_slot_and_never_counts_as_waiting() -> None:
    ahead = run(1, late=-0.04)
    assert ids(decide_claim([(ahead, False)], {}, {"j": FORBID}, NOW).start) == [(1, 0)]
    busy = decide_claim([(ahead, False)], {("j", ""): {0: lease()}}, {"j": FORBID}, NOW)
    assert busy.start == busy.skip == busy.replace == [] and busy.waiting == 0
    paused = decide_claim([(ahead, True)], {}, {"j": FORBID}, NOW)
    assert paused.start == paused.skip == [] and paused.waiting == 0


def test_retry_after_one_rule_for_outcomes_and_lost_runs() -> None:
    assert retry_after(status="failed", attempt=1, max_attempts=1) is None  # none left
    assert retry_after(status="succeeded", attempt=1, max_attempts=3) is None
    assert retry_after(status="cancelled", attempt=1, max_attempts=3) is None
    assert retry_after(status="lost", attempt=1, max_attempts=2) == 0.0
    assert retry_after(status="cancelled", attempt=1, max_attempts=2, stop_reason="shutdown") == 0.0
    assert retry_after(status="timed_out", attempt=2, max_attempts=3) == 0.0  # no job: at once


KEYED = Policy(overlap="allow", keyed=True, max_per_key=1, misfire_grace=60)


def test_lease_slots_are_per_key_value_with_a_concurrency_key() -> None:
    runs = [
        (run(i, trigger="manual", concurrency_key=k), False)
        for i, k in ((1, "a"), (2, "a"), (3, "b"))
    ]
    d = decide_claim(runs, {}, {"j": KEYED}, NOW)
    assert ids(d.start) == [(1, 0), (3, 0)] and d.waiting == 1 and d.passed_over == 1
    held = {("j", "b"): {0: lease(run_id=3)}}
    d = decide_claim(
        [(run(4, trigger="manual", concurrency_key="b"), False)], held, {"j": KEYED}, NOW
    )
    assert d.start == [] and d.waiting == 1


def test_a_rate_window_admits_n_starts_and_says_when_it_reopens() -> None:
    rated = Policy(overlap="allow", rate=(2, 60.0))
    earlier = NOW.timestamp() - 50  # one start 50 s ago: one more fits in the minute
    runs = [(run(i, trigger="manual"), False) for i in (1, 2, 3)]
    d = decide_claim(runs, {}, {"j": rated}, NOW, {("j", ""): [earlier]})
    assert ids(d.start) == [(1, 0)] and d.waiting == 2
    starts, reopen = d.rates["j", ""]
    assert starts == [earlier, NOW.timestamp()] and reopen == earlier + 60
    # Starts older than the window do not count; later ones (a peer's) do.
    d = decide_claim(runs, {}, {"j": rated}, NOW, {("j", ""): [NOW.timestamp() - 61]})
    assert len(d.start) == 2
    d = decide_claim(runs, {}, {"j": rated}, NOW, {("j", ""): [NOW.timestamp() + 0.01] * 2})
    assert d.start == [] and d.rates == {}


def test_a_rate_limited_slot_waits_rather_than_being_skipped() -> None:
    rated = Policy(overlap="forbid", rate=(1, 3600.0), misfire_grace=60)
    d = decide_claim([(run(1), False)], {}, {"j": rated}, NOW, {("j", ""): [NOW.timestamp()]})
    assert d.start == d.skip == [] and d.waiting == 1


def test_runtime_schedules_overlap_per_schedule_but_share_the_jobs_limits() -> None:
    """Five schedules of one job fire together: with `forbid` each takes its own lane (no
    slot skips another's), while `max_concurrency` (with `allow`) and `rate_limit` hold for
    the job as a whole."""
    runs = [(run(i, schedule_key=f"user-{i}"), False) for i in range(1, 6)]
    forbid = decide_claim(runs, {}, {"j": Policy(overlap="forbid")}, NOW)
    assert len(forbid.start) == 5 and forbid.skip == []
    held = {("j", "\x1euser-1"): {0: Lease(job_name="j", slot=0, run_id=99, fence=1)}}
    again = decide_claim(runs, held, {"j": Policy(overlap="forbid")}, NOW)
    assert [r.schedule_key for r, why in again.skip] == ["user-1"]  # only its own schedule
    allow = decide_claim(runs, {}, {"j": Policy(overlap="allow", max_concurrency=2)}, NOW)
    assert len(allow.start) == 2, "max_concurrency is the job's"
    rated = decide_claim(runs, {}, {"j": Policy(overlap="forbid", rate=(1, 60.0))}, NOW)
    assert len(rated.start) == 1 and list(rated.rates) == [("j", "")], "rate_limit is the job's"
    allowed = [(run(7, schedule_key="k", overlap="allow"), False)]  # the schedule's override
    held_job = {("j", ""): {0: Lease(job_name="j", slot=0, run_id=98, fence=1)}}
    mixed = decide_claim(allowed, held_job, {"j": Policy(overlap="forbid")}, NOW)
    assert len(mixed.start) == 1, "allow: a free slot of the job's lane (unlimited)"
