"""`jobrunner why JOB`: slot by slot, what became of each expected slot of a job, and why."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import typer

from jobrunner.cli.app import (
    ConfigOption,
    JsonOption,
    add_row,
    app,
    fail,
    instant,
    load_settings,
    open_store,
    out,
    print_json,
    say,
    table,
    when,
    zone,
)
from jobrunner.ledger import SlotReport, Surroundings, explain, summarize
from jobrunner.schedule import Schedule

WHY_MAX_SLOTS = 10_000


@app.command()
def why(
    job: str = typer.Argument(..., help="Job name."),
    since: str = typer.Option(
        "1h",
        "--since",
        help="Window start: a duration back (1h) or an ISO time (the job's zone if no offset).",
    ),
    until: str | None = typer.Option(
        None, "--until", help="Window end (default now): a duration back or an ISO time."
    ),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Slot by slot, in the job's zone: what happened to each expected slot, and why.

    Each slot of the job's cron in the window is ran (outcome, attempts, worker), skipped
    (overlap, misfired, paused), queued, running, or "no row" with the likely reason."""
    cfg = load_settings(config)
    with open_store(cfg) as store:
        entry = store.get_job(job)
        if entry.cron is None:
            fail(f"job {job!r} has no cron, so no slots: see `jobrunner runs list --job {job}`", 2)
        tz = zone(entry.timezone)
        now = store.now()
        start = instant(since, "--since", now, tz)
        end = instant(until, "--until", now, tz) if until is not None else now
        if start >= end:
            fail(f"--since ({start.isoformat()}) must be before --until ({end.isoformat()})", 2)
        schedule = Schedule(entry.cron, tz)
        expected = schedule.between(start, end, limit=WHY_MAX_SLOTS)
        truncated = (
            len(expected) == WHY_MAX_SLOTS
            and schedule.count_between(start, end, WHY_MAX_SLOTS + 1) > WHY_MAX_SLOTS
        )
        window_start = expected[0] - timedelta(microseconds=1) if truncated else start
        runs = [
            r
            for r in store.slot_runs(job, window_start, end)
            if r.scheduled_for and r.scheduled_for > window_start
        ]
        first, last = store.slot_bounds(job)
        around = Surroundings(
            now=now,
            job=entry,
            first_slot=first,
            last_slot=last,
            workers=store.list_workers(),
            lease_ttl=cfg.worker.lease_ttl,
            retention=cfg.history.retention,
        )
    reports = explain(expected, runs, around)
    counts = summarize(reports)
    if as_json:
        print_json(
            {
                "job": job,
                "cron": entry.cron,
                "timezone": entry.timezone,
                "paused": entry.paused,
                "since": window_start.isoformat(),
                "until": end.isoformat(),
                "truncated": truncated,
                "expected": len(expected),
                "summary": counts,
                "slots": [r.as_dict() for r in reports],
            }
        )
        return
    say(
        f"{job}: cron {entry.cron!r} in {entry.timezone}, {len(expected)} expected slot(s) from "
        f"{when(window_start, tz)} to {when(end, tz)}" + (" (paused now)" if entry.paused else "")
    )
    if truncated:
        say(f"the window has more than {WHY_MAX_SLOTS} slots: showing the newest {WHY_MAX_SLOTS}")
    t = table("SLOT (" + entry.timezone + ")", "WHAT HAPPENED", "ATTEMPTS", "WORKER", "RUNS", "WHY")
    for group in _collapse(reports):
        first_r, last_r = group[0], group[-1]
        label = when(first_r.slot, tz)
        if len(group) > 1:
            end_label = last_r.slot.astimezone(tz).strftime("%H:%M:%S")
            label = f"{label} .. {end_label} ({len(group)} slots)"
        add_row(
            t,
            label,
            _what(first_r),
            first_r.attempts or "-",
            first_r.worker,
            ",".join(str(i) for i in first_r.run_ids) or "-",
            _why_text(first_r),
        )
    out.print(t)
    say("summary: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no slots"))


SKIP_NOTES = {
    "overlap": "the previous run still held the lease (overlap policy)",
    "misfired": "missed while no worker could start it in time (catch_up, misfire_grace)",
    "paused": "the job was paused",
}


def _why_text(r: SlotReport) -> str | None:
    if r.state == "skipped" and r.reason is not None:
        return SKIP_NOTES.get(r.reason, r.reason)
    return r.reason


def _what(r: SlotReport) -> str:
    if r.state == "ran":
        return f"ran: {r.outcome}"
    if r.state == "skipped":
        return f"skipped: {r.reason}"
    return r.state


def _collapse(reports: Sequence[SlotReport]) -> list[list[SlotReport]]:
    """Consecutive slots without a row for the same reason become one range line."""
    groups: list[list[SlotReport]] = []
    for r in reports:
        prev = groups[-1][-1] if groups else None
        if (
            prev is not None
            and r.state == "no row"
            and prev.state == "no row"
            and prev.reason == r.reason
        ):
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups
