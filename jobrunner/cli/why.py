"""`jobrunner why JOB`: slot by slot, what became of each expected slot of a job, and why.

The ledger is computed by `jobrunner.ledger` from what the store returns; this module asks
the store and renders the ledger as a table or as JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from zoneinfo import ZoneInfo

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
from jobrunner.ledger import (
    MAX_SLOTS,
    Ledger,
    SlotReport,
    Surroundings,
    account,
    collapse,
    slot_window,
)
from jobrunner.records import CatalogEntry, ScheduleRow
from jobrunner.store.ports import AdminPort
from jobrunner.waits import live, queue_served, unserved_text


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
    key: str | None = typer.Option(
        None, "--key", help="The slots of the job's runtime schedule with this key."
    ),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Slot by slot, in the job's zone: what happened to each expected slot, and why.

    Each slot of the job's cron in the window is ran (outcome, attempts, worker), skipped
    (overlap, misfired, paused), queued, running, or "no row" with the likely reason. With
    --key, the slots of that runtime schedule, with the version of it that decided each."""
    cfg = load_settings(config)
    with open_store(cfg) as store:
        entry, schedule = _entry(store, job, key)
        now = store.now()
        workers = live(store.list_workers(), now, cfg.worker.lease_ttl)
        unserved = None if queue_served(entry, workers) else unserved_text(entry, workers)
        if entry.cron is None:
            if unserved and not as_json:
                say(f"{job}: {unserved}: its queued runs wait")
            fail(f"job {job!r} has no cron, so no slots: see `jobrunner runs list --job {job}`", 2)
        tz = zone(entry.timezone)
        start = instant(since, "--since", now, tz)
        end = instant(until, "--until", now, tz) if until is not None else now
        if start >= end:
            fail(f"--since ({start.isoformat()}) must be before --until ({end.isoformat()})", 2)
        window = slot_window(entry.cron, tz, start, end)
        rows = store.slot_runs(job, window.start, end, key or "")
        first, last = store.slot_bounds(job, key or "")
        around = Surroundings(
            now=now,
            job=entry,
            first_slot=first,
            last_slot=last,
            workers=store.list_workers(),
            lease_ttl=cfg.worker.lease_ttl,
            retention=cfg.history.retention,
        )
    ledger = account(window, rows, around)
    versions = {r.id: r.schedule_version for r in rows} if schedule else None
    if as_json:
        extra = {"schedule": schedule.as_dict(), "versions": versions} if schedule else {}
        print_json({**ledger.as_dict(), "unserved": unserved, **extra})
    else:
        _print_ledger(ledger, tz, schedule, versions)
        if unserved:
            say(f"now: {unserved}: its slots are queued but wait, and misfire when late")


def _entry(store: AdminPort, job: str, key: str | None) -> tuple[CatalogEntry, ScheduleRow | None]:
    """The job's catalog entry, with the cron and zone of its runtime schedule `key`."""
    entry = store.get_job(job)
    if key is None:
        return entry, None
    schedule = store.get_schedule(job, key)
    zone_name = schedule.timezone or entry.timezone
    return dataclasses.replace(entry, cron=schedule.cron, timezone=zone_name), schedule


def _print_ledger(
    ledger: Ledger,
    tz: ZoneInfo,
    schedule: ScheduleRow | None = None,
    versions: Mapping[int, int | None] | None = None,
) -> None:
    entry, window = ledger.job, ledger.window
    of = ""
    if schedule is not None:
        of = f" (schedule {schedule.key!r}, {schedule.status}, version {schedule.version})"
    say(
        f"{entry.name}{of}: cron {entry.cron!r} in {entry.timezone}, "
        f"{len(window.expected)} expected slot(s) from {when(window.start, tz)} to "
        f"{when(window.end, tz)}" + (" (paused now)" if entry.paused else "")
    )
    if window.truncated:
        say(f"the window has more than {MAX_SLOTS} slots: showing the newest {MAX_SLOTS}")
    columns = ["SLOT (" + entry.timezone + ")", "WHAT HAPPENED", "ATTEMPTS", "WORKER", "RUNS"]
    t = table(*columns, *(["VERSION"] if versions is not None else []), "WHY")
    for group in collapse(ledger.reports):
        first, last = group[0], group[-1]
        label = when(first.slot, tz)
        if len(group) > 1:
            end_label = last.slot.astimezone(tz).strftime("%H:%M:%S")
            label = f"{label} .. {end_label} ({len(group)} slots)"
        cells: list[object] = [
            label,
            _what(first),
            first.attempts or "-",
            first.worker,
            ",".join(str(i) for i in first.run_ids) or "-",
        ]
        if versions is not None:
            seen = sorted({v for i in first.run_ids if (v := versions.get(i)) is not None})
            cells.append(",".join(map(str, seen)) or "-")
        add_row(t, *cells, _why_text(first))
    out.print(t)
    counts = ledger.summary
    say("summary: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no slots"))


SKIP_NOTES = {
    "overlap": "the previous run still held the lease (overlap policy)",
    "misfired": "missed while no worker could start it in time (catch_up, misfire_grace)",
    "paused": "the job (or the schedule) was paused",
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
