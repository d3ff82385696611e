"""`jobrunner jobs list|next|pause|resume|trigger`: the jobs in the catalog.

These commands read the database named by the config (`-c`) and import no job code.
"""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from jobrunner.cli.app import (
    ConfigOption,
    JsonOption,
    add_row,
    ago,
    app,
    duration,
    err,
    error_line,
    fail,
    integer,
    iso,
    limits_text,
    load_settings,
    open_store,
    out,
    parse_kwargs,
    print_json,
    say,
    table,
    took,
    when,
    zone,
)
from jobrunner.config import format_duration
from jobrunner.converters import PRIORITY_RANGE
from jobrunner.records import CatalogEntry, Run
from jobrunner.schedule import Schedule
from jobrunner.signature import signature_text
from jobrunner.store.ports import AdminPort
from jobrunner.store.tables import FINAL_STATUSES
from jobrunner.waits import job_queue, live, queue_served, unserved, unserved_text

jobs_app = typer.Typer(
    help="Jobs in the catalog: list, next, pause, resume, trigger.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")

WAIT_POLL = 0.25  # seconds between polls of `jobs trigger --wait`


def _next_fire(entry: CatalogEntry, now: datetime) -> datetime | None:
    return (
        None if entry.cron is None else Schedule(entry.cron, zone(entry.timezone)).next_after(now)
    )


@jobs_app.command("list")
def jobs_list(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Jobs in the catalog: schedule, zone, next fire, last outcome, paused."""
    cfg = load_settings(config)
    with open_store(cfg) as store:
        now = store.now()
        entries = store.list_jobs()
        last = store.last_outcomes()
        workers = live(store.list_workers(), now, cfg.worker.lease_ttl)
    rows = [(e, last.get(e.name), _next_fire(e, now)) for e in entries]
    served = {e.name: queue_served(e, workers) for e in entries}
    if as_json:
        print_json([_job_json(e, run, nxt, served[e.name]) for e, run, nxt in rows])
        return
    t = table(
        "NAME", "SCHEDULE", "ZONE", "QUEUE", "OVERLAP", "NEXT FIRE", "LAST OUTCOME", "FINISHED",
        "PAUSED",
    )  # fmt: skip
    for e, run, nxt in rows:
        finished = run.finished_at if run else None
        queue = job_queue(e.definition)
        add_row(
            t,
            e.name,
            e.cron or "(trigger only)",
            e.timezone,
            queue if served[e.name] else f"{queue} (no live worker)",
            limits_text(e.definition),
            when(nxt, zone(e.timezone)) if nxt else "-",
            run.status if run else None,
            ago(now - finished) if finished else "-",
            "yes" if e.paused else "no",
        )
    out.print(t)
    if not rows:
        say("no jobs in the catalog: a worker publishes its jobs when it starts")
    for queue, names in sorted(unserved(entries, workers).items()):
        err.print(
            f"warning: queue {queue!r} is served by no live worker: runs of "
            f"{', '.join(names)} wait until a worker whose [worker] queues includes it starts",
            markup=False,
            highlight=False,
        )


def _job_json(
    e: CatalogEntry, run: Run | None, nxt: datetime | None, served: bool
) -> dict[str, Any]:
    d = e.definition
    return {
        "name": e.name,
        "cron": e.cron,
        "timezone": e.timezone,
        "next_fire": iso(nxt),
        "last_outcome": run.status if run else None,
        "last_finished_at": iso(run.finished_at) if run else None,
        "last_run_id": run.id if run else None,
        "paused": e.paused,
        "overlap": d.get("overlap"),
        "max_concurrency": d.get("max_concurrency"),
        "queue": job_queue(d),
        "queue_served": served,
        "priority": d.get("priority", 0),
        "concurrency_key": d.get("concurrency_key"),
        "max_per_key": d.get("max_per_key"),
        "rate_limit": d.get("rate_limit"),
        "definition_hash": e.config_hash,
    }


@jobs_app.command("show")
def jobs_show(
    name: str = typer.Argument(..., help="Job name."),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """A job's signature (the parameters its worker published), schedule and settings."""
    cfg = load_settings(config)
    with open_store(cfg) as store:
        entry = store.get_job(name)
    if as_json:
        print_json(
            {
                "name": entry.name,
                "cron": entry.cron,
                "timezone": entry.timezone,
                "definition": dict(entry.definition),
                "parameters": entry.parameters,
                "signature": signature_text(entry.name, entry.parameters),
            }
        )
        return
    say(signature_text(entry.name, entry.parameters))
    say(f"schedule: {entry.cron or '(trigger only)'} ({entry.timezone})")
    say(f"queue: {job_queue(entry.definition)}; overlap: {limits_text(entry.definition)}")
    defaults = entry.definition.get("kwargs") or {}
    if defaults:
        say(f"its own kwargs (an enqueue's are merged over them): {json.dumps(defaults)}")


@jobs_app.command("next")
def jobs_next(
    name: str = typer.Argument(..., help="Job name."),
    count: int = typer.Option(5, "-n", min=1, max=1000, help="How many fire times."),
    key: str | None = typer.Option(
        None, "--key", help="The fire times of the job's runtime schedule with this key."
    ),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """The job's next fire times (or its runtime schedule's), in its zone."""
    cfg = load_settings(config)
    with open_store(cfg) as store:
        entry = store.get_job(name)
        now = store.now()
        paused = entry.paused
        if key is not None:
            row = store.get_schedule(name, key)
            cron = None if row.next_fire_at is None else row.cron
            entry = dataclasses.replace(entry, cron=cron, timezone=row.timezone or entry.timezone)
            paused = paused or row.status == "paused"
    if entry.cron is None:
        if as_json:
            print_json([])
        else:
            say(f"{name} has no cron: it runs only when enqueued or triggered" if key is None
                else f"schedule {key!r} of {name} has ended: it fires no more")  # fmt: skip
        return
    schedule = Schedule(entry.cron, zone(entry.timezone))
    times: list[datetime] = []
    at = now
    for _ in range(count):
        at = schedule.next_after(at)
        times.append(at)
    if as_json:
        print_json([t.isoformat() for t in times])
        return
    tz = zone(entry.timezone)
    t = table("FIRE TIME (" + entry.timezone + ")", "UTC", "IN")
    for x in times:
        add_row(t, when(x, tz), when(x), ago(now - x))
    out.print(t)
    if paused:
        say(f"{name} is paused: these slots will be recorded skipped (reason paused)")


def _set_paused(name: str, paused: bool, config: Path | None) -> None:
    cfg = load_settings(config)
    with open_store(cfg) as store:
        store.set_paused(name, paused)
    if paused:
        say(
            f"paused {name}: every replica records its slots skipped (reason paused) until "
            f"`jobrunner jobs resume {name}`; runs already running go on"
        )
    else:
        say(f"resumed {name}: its next slots run")


@jobs_app.command("pause")
def jobs_pause(
    name: str = typer.Argument(..., help="Job name."), config: Path | None = ConfigOption
) -> None:
    """Pause a job on every replica, without a restart (its slots are recorded skipped)."""
    _set_paused(name, True, config)


@jobs_app.command("resume")
def jobs_resume(
    name: str = typer.Argument(..., help="Job name."), config: Path | None = ConfigOption
) -> None:
    """Resume a paused job."""
    _set_paused(name, False, config)


@jobs_app.command("trigger")
def jobs_trigger(
    name: str = typer.Argument(..., help="Job name."),
    kwargs: str | None = typer.Option(None, "--kwargs", help="Arguments as a JSON object."),
    wait: bool = typer.Option(
        False, "--wait", help="Follow the run (and its retries); exit 0 if it succeeds, else 1."
    ),
    timeout: str | None = typer.Option(
        None, "--timeout", help="With --wait: give up after this long (exit 1)."
    ),
    idempotency_key: str | None = typer.Option(
        None, "--idempotency-key", help="A repeat returns the first run."
    ),
    correlation_id: str | None = typer.Option(
        None, "--correlation-id", help="Stored on the run and bound in its logs."
    ),
    priority: str | None = typer.Option(
        None,
        "--priority",
        help=f"Higher runs first, {PRIORITY_RANGE[0]:,} to {PRIORITY_RANGE[1]:,} (default: the "
        "job's priority, else 0).",
    ),
    concurrency_key: str | None = typer.Option(
        None,
        "--concurrency-key",
        help="The run's concurrency key value (default: its kwarg named by the job's "
        "concurrency_key).",
    ),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Queue a run of a job now (a manual run); a worker starts it."""
    arguments = parse_kwargs(kwargs)
    limit = duration(timeout, "--timeout") if timeout is not None else None
    cfg = load_settings(config)
    with open_store(cfg) as store:
        run = store.enqueue(
            name,
            arguments,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            priority=integer(priority, "--priority"),
            concurrency_key=concurrency_key,
        )
        if not wait:
            if as_json:
                print_json(run.as_dict())
            else:
                say(f"queued run {run.id} of {name}")
            return
        if not as_json:
            say(f"queued run {run.id} of {name}; waiting for it to finish")
        _warn_if_no_worker(store, store.get_job(name), cfg.worker.lease_ttl)
        final = _follow(store, run, limit, quiet=as_json)
    if as_json:
        print_json(final.as_dict() if final else run.as_dict())
    if final is None:
        fail(f"run {run.id} not finished after {format_duration(limit or timedelta(0))}")
    if final.status != "succeeded":
        raise typer.Exit(1)


def _warn_if_no_worker(store: AdminPort, entry: CatalogEntry, lease_ttl: timedelta) -> None:
    workers = live(store.list_workers(), store.now(), lease_ttl)
    if not queue_served(entry, workers):
        err.print(
            f"warning: {unserved_text(entry, workers)}; the run waits until then",
            markup=False,
            highlight=False,
        )


def _follow(store: AdminPort, run: Run, limit: timedelta | None, *, quiet: bool) -> Run | None:
    """Poll the run and its retries until the newest attempt is final; None on timeout."""
    deadline = None if limit is None else time.monotonic() + limit.total_seconds()
    seen: dict[int, str] = {}
    while True:
        attempts = store.run_attempts(run.id)
        for a in attempts:
            if seen.get(a.id) != a.status and not quiet:
                say(_progress(a))
            seen[a.id] = a.status
        newest = attempts[-1]
        if newest.status in FINAL_STATUSES:
            return newest
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(WAIT_POLL)


def _progress(run: Run) -> str:
    head = f"run {run.id} (attempt {run.attempt}/{run.max_attempts}): {run.status}"
    if run.status == "running":
        return f"{head} on {run.worker_id}"
    detail = error_line(run)
    if run.status in FINAL_STATUSES:
        spent = took(run)
        head = f"{head} in {spent}" if spent != "-" else head
    return f"{head} ({detail})" if detail else head
