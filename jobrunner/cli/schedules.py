"""`jobrunner schedules list|create|update|pause|resume|delete|backfill`: runtime schedules.

They are the ones an app creates through `Client.create_schedule` (per user, per tenant),
kept in the database beside the TOML's: these commands read and change them there and
import no job code. Settings are checked as the config's; bad input exits 2 and writes
nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    parse_kwargs,
    print_json,
    say,
    table,
    when,
    zone,
)
from jobrunner.records import ScheduleRow
from jobrunner.runtime import schedule_changes

schedules_app = typer.Typer(
    help="Runtime schedules (made by apps): list, create, update, pause, resume, delete; "
    "backfill (also of a TOML schedule).",
    no_args_is_help=True,
)
app.add_typer(schedules_app, name="schedules")

JobArgument = typer.Argument(..., help="Job name.")
KeyOption = typer.Option(..., "--key", help="The schedule's key (unique per job).")
CronOption = typer.Option(None, "--cron", help="Cron expression (5 or 6 fields).")
ZoneOption = typer.Option(None, "--timezone", help="IANA zone (default: the job's).")
KwargsOption = typer.Option(None, "--kwargs", help="Arguments as a JSON object.")
CatchUpOption = typer.Option(None, "--catch-up", help="skip | latest | all (default: the job's).")
OverlapOption = typer.Option(
    None, "--overlap", help="forbid | allow | replace (default: the job's)."
)


@schedules_app.command("list")
def schedules_list(
    job: str | None = typer.Argument(None, help="Only this job's schedules."),
    ended: bool = typer.Option(False, "--all", help="Also the deleted and retired ones."),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Runtime schedules by job and key: cron, zone, next fire, status, version."""
    cfg = load_settings(config)
    with open_store(cfg) as store:
        found = store.list_schedules(job, ended=ended)
        zones = {e.name: e.timezone for e in store.list_jobs()}
    if as_json:
        print_json([s.as_dict() for s in found])
        return
    t = table("JOB", "KEY", "SCHEDULE", "ZONE", "NEXT FIRE", "STATUS", "VERSION", "KWARGS")
    for s in found:
        tz = s.timezone or zones.get(s.job_name, "UTC")
        status = s.status + (f" ({s.status_note})" if s.status_note else "")
        add_row(
            t, s.job_name, s.key, s.cron, tz, when(s.next_fire_at, zone(tz)), status, s.version,
            _kwargs_text(s.kwargs),
        )  # fmt: skip
    out.print(t)
    if not found:
        say("no runtime schedules" + (f" of {job}" if job else ""))


def _kwargs_text(kwargs: Any) -> str:
    text = json.dumps(kwargs, separators=(",", ":"))
    return text if len(text) <= 60 else text[:57] + "..."


def _print(made: ScheduleRow, verb: str, as_json: bool) -> None:
    if as_json:
        print_json(made.as_dict())
        return
    nxt = f", next fire {made.next_fire_at.isoformat()}" if made.next_fire_at else ""
    say(f"{verb} schedule {made.key!r} of {made.job_name} (version {made.version}{nxt})")


@schedules_app.command("create")
def schedules_create(
    job: str = JobArgument,
    key: str = KeyOption,
    cron: str | None = CronOption,
    timezone: str | None = ZoneOption,
    kwargs: str | None = KwargsOption,
    catch_up: str | None = CatchUpOption,
    overlap: str | None = OverlapOption,
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a schedule of a job, keyed by --key; its slots begin after now."""
    if cron is None:
        fail("--cron is required: a cron expression like '0 9 * * 1'", 2)
    changes = schedule_changes(cron, timezone, parse_kwargs(kwargs), catch_up, overlap)
    cfg = load_settings(config)
    with open_store(cfg) as store:
        made = store.create_schedule(job, key, changes)
    _print(made, "created", as_json)


@schedules_app.command("update")
def schedules_update(
    job: str = JobArgument,
    key: str = KeyOption,
    cron: str | None = CronOption,
    timezone: str | None = ZoneOption,
    kwargs: str | None = KwargsOption,
    catch_up: str | None = CatchUpOption,
    overlap: str | None = OverlapOption,
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Change a schedule; it takes effect at its next slot not yet claimed."""
    given = schedule_changes(cron, timezone, parse_kwargs(kwargs), catch_up, overlap)
    changes = {k: v for k, v in given.items() if v is not None}
    if not changes:
        fail("nothing to change: give --cron, --timezone, --kwargs, --catch-up or --overlap", 2)
    cfg = load_settings(config)
    with open_store(cfg) as store:
        made = store.update_schedule(job, key, changes)
    _print(made, "updated", as_json)


def _act(method: str, verb: str, job: str, key: str, config: Path | None, *args: Any) -> None:
    with open_store(load_settings(config)) as store:
        made = getattr(store, method)(job, key, *args)
    _print(made, verb, False)


@schedules_app.command("pause")
def schedules_pause(
    job: str = JobArgument, key: str = KeyOption, config: Path | None = ConfigOption
) -> None:
    """Pause a schedule: its slots are recorded skipped (reason paused) until resumed."""
    _act("set_schedule_paused", "paused", job, key, config, True)


@schedules_app.command("resume")
def schedules_resume(
    job: str = JobArgument, key: str = KeyOption, config: Path | None = ConfigOption
) -> None:
    """Resume a paused schedule."""
    _act("set_schedule_paused", "resumed", job, key, config, False)


@schedules_app.command("delete")
def schedules_delete(
    job: str = JobArgument, key: str = KeyOption, config: Path | None = ConfigOption
) -> None:
    """Delete a schedule: no slot after now runs; it stays listed with --all as deleted."""
    _act("delete_schedule", "deleted", job, key, config)


@schedules_app.command("backfill")
def schedules_backfill(
    job: str = JobArgument,
    key: str | None = typer.Option(
        None, "--key", help="The runtime schedule's key (default: the job's TOML schedule)."
    ),
    since: str = typer.Option(
        ..., "--from", help="Window start: a duration back (1d) or an ISO time (job's zone)."
    ),
    until: str = typer.Option(
        "0s", "--to", help="Window end (default now): a duration back or an ISO time."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be queued."),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Queue the slots of a window that have no row (missed while nothing ran), once each,
    recorded as backfill; a second backfill of the window queues nothing more."""
    cfg = load_settings(config)
    with open_store(cfg) as store:
        entry = store.get_job(job)
        tz_name = (store.get_schedule(job, key).timezone if key else None) or entry.timezone
        now, tz = store.now(), zone(tz_name)
        start, end = instant(since, "--from", now, tz), instant(until, "--to", now, tz)
        missing, recorded = store.backfill(job, key, start, end, dry_run=dry_run)
    if as_json:
        print_json({"slots": [t.isoformat() for t in missing], "had_a_row": recorded})
        return
    of = f"{job}" + (f" (schedule {key!r})" if key else "")
    verb = "would queue" if dry_run else "queued"
    say(
        f"{verb} {len(missing)} slot(s) of {of} from {when(start, tz)} to {when(end, tz)}; "
        f"{recorded} slot(s) of the window had a row already"
    )
    for t in missing[:SHOWN]:
        say(f"  {when(t, tz)}")
    if len(missing) > SHOWN:
        say(f"  ... and {len(missing) - SHOWN} more")


SHOWN = 20  # slots a backfill lists
