"""`jobrunner runs list|show|cancel`: the run history."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import typer

from jobrunner.cli.app import (
    ConfigOption,
    JsonOption,
    add_row,
    app,
    check_status,
    error_line,
    fail,
    instant,
    integer,
    load_settings,
    open_store,
    out,
    print_json,
    say,
    table,
    took,
    when,
)
from jobrunner.errors import JobNotFound
from jobrunner.records import CatalogEntry, Run
from jobrunner.store.ports import AdminPort
from jobrunner.store.redrive import RETRYABLE_STATUSES
from jobrunner.store.tables import RUN_STATUSES
from jobrunner.waits import live, waiting_reason

runs_app = typer.Typer(help="Run history: list, show, cancel.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

MAX_LIMIT = 10_000


@runs_app.command("list")
def runs_list(
    job: str | None = typer.Option(None, "--job", help="Only this job."),
    status: str | None = typer.Option(
        None, "--status", help=f"Only this status: {', '.join(RUN_STATUSES)}."
    ),
    since: str | None = typer.Option(
        None,
        "--since",
        help="Enqueued since: a duration back (1h) or an ISO time (UTC if no offset).",
    ),
    limit: int = typer.Option(
        50, "--limit", min=1, max=MAX_LIMIT, help="At most this many, newest first."
    ),
    correlation_id: str | None = typer.Option(
        None, "--correlation-id", help="Only runs with this correlation id."
    ),
    queue: str | None = typer.Option(None, "--queue", help="Only runs of this queue's jobs."),
    priority: str | None = typer.Option(None, "--priority", help="Only runs of this priority."),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Runs, newest first."""
    check_status(status)
    cfg = load_settings(config)
    with open_store(cfg) as store:
        now = store.now()
        start = instant(since, "--since", now) if since is not None else None
        if job is not None and not store.has_runs(job):
            store.get_job(job)  # an unknown job is bad input (exit 2)
        runs = store.list_runs(
            job=job,
            status=status,
            since=start,
            correlation_id=correlation_id,
            queue=queue,
            priority=integer(priority, "--priority"),
            limit=limit,
        )
    if as_json:
        print_json([r.as_dict() for r in runs])
        return
    t = table(
        "ID", "JOB", "TRIGGER", "SLOT", "ATTEMPT", "STATUS", "WORKER", "STARTED", "TOOK", "REASON"
    )
    for r in runs:
        add_row(
            t,
            r.id,
            r.job_name,
            r.trigger,
            when(r.scheduled_for) if r.scheduled_for else "-",
            f"{r.attempt}/{r.max_attempts}",
            r.status
            + (" (cancel requested)" if r.cancel_requested and r.status == "running" else ""),
            r.worker_id,
            when(r.started_at) if r.started_at else "-",
            took(r),
            error_line(r),
        )
    out.print(t)


@runs_app.command("show")
def runs_show(
    run_id: int = typer.Argument(..., help="Run id."),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Every field of a run, its error with the traceback, and all its attempts."""
    cfg = load_settings(config)
    with open_store(cfg) as store:
        run = store.get_run(run_id)
        attempts = store.run_attempts(run_id)
        waiting = _waiting(store, run, cfg.worker.lease_ttl)
    if as_json:
        shown = {**run.as_dict(), "waiting": waiting}
        print_json({**shown, "attempts": [a.as_dict() for a in attempts]})
        return
    fields = table("FIELD", "VALUE")
    for key, value in run.as_dict().items():
        if key == "error":
            continue
        if key == "kwargs" or (key == "result" and value is not None):
            value = json.dumps(value, sort_keys=True)
        add_row(fields, key, value)
    out.print(fields)
    if waiting:
        say("")
        say(f"waiting: {waiting}")
    if run.error:
        say("")
        say(f"error: {run.error.get('type')}: {run.error.get('message')}")
        if run.error.get("traceback"):
            say(str(run.error["traceback"]).rstrip())
    say("")
    say(f"attempts ({len(attempts)}):")
    t = table(
        "ID", "ATTEMPT", "TRIGGER", "STATUS", "WORKER", "STARTED", "FINISHED", "TOOK", "REASON"
    )
    for a in attempts:
        add_row(
            t,
            a.id,
            f"{a.attempt}/{a.max_attempts}",
            a.trigger,
            a.status,
            a.worker_id,
            when(a.started_at) if a.started_at else "-",
            when(a.finished_at) if a.finished_at else "-",
            took(a),
            error_line(a),
        )
    out.print(t)


def _waiting(store: AdminPort, run: Run, lease_ttl: timedelta) -> str | None:
    """Why a queued run has not started (None for any other run)."""
    if run.status != "queued":
        return None
    entry: CatalogEntry | None
    try:
        entry = store.get_job(run.job_name)
    except JobNotFound:
        entry = None
    now = store.now()
    keyed = entry is not None and entry.definition.get("concurrency_key") is not None
    key = (run.concurrency_key or "") if keyed else ""
    rated = entry is not None and entry.definition.get("rate_limit") is not None
    blocked = store.rate_blocked_until(run.job_name, key) if rated else None
    workers = live(store.list_workers(), now, lease_ttl)
    return waiting_reason(run, entry, workers, store.list_locks(), blocked, now)


@runs_app.command("cancel")
def runs_cancel(
    run_id: int = typer.Argument(..., help="Run id."), config: Path | None = ConfigOption
) -> None:
    """Cancel a run: a queued run at once; a running one at its worker's next heartbeat.

    Exit 1 if the run had already finished."""
    cfg = load_settings(config)
    with open_store(cfg) as store:
        before = store.get_run(run_id)
        after = store.cancel_run(run_id)
    if before.status == "queued" and after.status == "cancelled":
        say(f"cancelled run {run_id} (it was queued)")
    elif after.status == "running":
        say(
            f"cancel requested for run {run_id}: worker {after.worker_id} cancels it at its next "
            f"heartbeat (see `jobrunner runs show {run_id}`)"
        )
    elif after.status == "cancelled":
        say(f"run {run_id} is already cancelled")
    else:
        fail(f"run {run_id} already finished: {after.status}")


@runs_app.command("retry")
def runs_retry(
    run_id: int | None = typer.Argument(None, help="Run id (or select runs with --job ...)."),
    job: str | None = typer.Option(None, "--job", help="Retry the runs of this job."),
    status: str = typer.Option(
        "failed", "--status", help="With --job: runs that ended so (failed, timed_out, lost, ...)."
    ),
    since: str | None = typer.Option(
        None, "--since", help="With --job: enqueued since (a duration back or an ISO time)."
    ),
    limit: int = typer.Option(1000, "--limit", min=1, max=MAX_LIMIT, help="At most this many."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be queued."),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Queue runs that ended without success again, each linked to the run it retries."""
    if (run_id is None) == (job is None):
        fail("give a run id or --job NAME (with --status, --since), not both", 2)
    if status not in RETRYABLE_STATUSES:
        fail(f"--status {status!r}: allowed {', '.join(RETRYABLE_STATUSES)}", 2)
    cfg = load_settings(config)
    with open_store(cfg) as store:
        if run_id is not None:
            chosen = [store.get_run(run_id)]
        else:
            store.get_job(job or "")  # an unknown job is bad input (exit 2)
            start = instant(since, "--since", store.now()) if since is not None else None
            found = store.list_runs(job=job, status=status, since=start, limit=limit)
            chosen = [r for r in found if _newest(store, r)]
        if dry_run:
            _print_retries(chosen, as_json, dry_run=True)
            return
        queued = [(r, store.retry_run(r.id)) for r in chosen]
    _print_retries([new for _, new in queued], as_json, dry_run=False, of=[r for r, _ in queued])


def _newest(store: AdminPort, run: Run) -> bool:
    """Whether the run is the newest attempt of its chain (older ones are not re-driven)."""
    return store.run_attempts(run.id)[-1].id == run.id


def _print_retries(
    runs: list[Run], as_json: bool, *, dry_run: bool, of: list[Run] | None = None
) -> None:
    if as_json:
        print_json([r.as_dict() for r in runs])
        return
    if dry_run:
        for r in runs:
            say(f"would retry run {r.id} of {r.job_name} ({r.status}, attempt {r.attempt})")
        say(f"{len(runs)} run(s) would be queued (dry run: nothing written)")
        return
    for old, new in zip(of or [], runs, strict=True):
        say(f"queued run {new.id} of {new.job_name} (attempt {new.attempt}), retrying run {old.id}")
    if not runs:
        say("no runs to retry")
