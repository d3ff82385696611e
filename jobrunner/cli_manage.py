"""Management commands: jobs, runs, locks, workers, prune, plan, why (registered on `app`).

They read the database named by the config (`-c`); none of them imports job code. List
commands print rich tables for people and `--json` for scripts. Bad input (an unknown job or
run, bad JSON, a bad duration or status) is a one-line `error: ...` on stderr and exit 2,
with nothing written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import typer
from rich.table import Table
from rich.text import Text

from jobrunner.cli import (
    ConfigOption,
    app,
    err,
    fail,
    load,
    open_store,
    out,
    print_json,
    table,
    when,
)
from jobrunner.config import Config, format_duration, parse_duration
from jobrunner.ledger import SlotReport, Surroundings, explain, summarize
from jobrunner.records import CatalogEntry, Run
from jobrunner.schedule import Schedule
from jobrunner.store.store import Store
from jobrunner.store.tables import FINAL_STATUSES, RUN_STATUSES

jobs_app = typer.Typer(
    help="Jobs in the catalog: list, next, pause, resume, trigger.", no_args_is_help=True
)
runs_app = typer.Typer(help="Run history: list, show, cancel.", no_args_is_help=True)
locks_app = typer.Typer(help="Leases held by running jobs.", no_args_is_help=True)
workers_app = typer.Typer(help="Worker processes and their liveness.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(runs_app, name="runs")
app.add_typer(locks_app, name="locks")
app.add_typer(workers_app, name="workers")

JsonOption = typer.Option(False, "--json", help="Print JSON (for scripts).")
MAX_LIMIT = 10_000
WHY_MAX_SLOTS = 10_000
WAIT_POLL = 0.25


# -- helpers ------------------------------------------------------------------------------


def _config(config: Path | None) -> Config:
    return load(config, import_funcs=False)


def _duration(value: str, option: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        fail(f"{option}: {exc}", 2)


def _instant(value: str, option: str, now: datetime, tz: ZoneInfo | Any = UTC) -> datetime:
    """A duration back from `now` (`1h`, `30m`) or an ISO time (naive: in `tz`)."""
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(
            f"{option}: invalid value {value!r}: expected a duration back from now like '1h' or "
            f"'30m', or an ISO time like '2026-05-01T12:00' or '2026-05-01T12:00+02:00'",
            2,
        )
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError):  # a catalog written by a newer tzdata
        return ZoneInfo("UTC")


def _span(seconds: float) -> str:
    """A short human duration: 850ms, 3.1s, 12m5s, 2d3h."""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return format_duration(timedelta(seconds=round(seconds)))


def _ago(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    return f"{_span(seconds)} ago" if seconds >= 0 else f"in {_span(seconds)}"


def _add_row(t: Table, *values: object) -> None:
    """Add a row of plain text: nothing from the database is read as rich markup."""
    t.add_row(*(Text("-" if v is None else str(v)) for v in values))


def _say(message: str) -> None:
    out.print(message, markup=False, highlight=False, soft_wrap=True)


def _duration_of(run: Run) -> str:
    if run.started_at is None or run.finished_at is None:
        return "-"
    return _span((run.finished_at - run.started_at).total_seconds())


def _error_line(run: Run) -> str | None:
    if run.error:
        return f"{run.error.get('type')}: {run.error.get('message')}"
    return run.reason


def _parse_kwargs(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--kwargs is not valid JSON: {exc.msg} at column {exc.colno}", 2)
    if not isinstance(value, dict):
        fail(f'--kwargs must be a JSON object like \'{{"region": "eu"}}\', got {text!r}', 2)
    return value


def _check_status(value: str | None) -> None:
    if value is not None and value not in RUN_STATUSES:
        fail(f"--status: unknown status {value!r}: allowed {', '.join(RUN_STATUSES)}", 2)


# -- jobs ---------------------------------------------------------------------------------


def _next_fire(entry: CatalogEntry, now: datetime) -> datetime | None:
    return (
        None if entry.cron is None else Schedule(entry.cron, _zone(entry.timezone)).next_after(now)
    )


@jobs_app.command("list")
def jobs_list(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Jobs in the catalog: schedule, zone, next fire, last outcome, paused."""
    cfg = _config(config)
    with open_store(cfg) as store:
        now = store.now()
        entries = store.list_jobs()
        last = store.last_outcomes()
    rows = [(e, last.get(e.name), _next_fire(e, now)) for e in entries]
    if as_json:
        print_json(
            [
                {
                    "name": e.name,
                    "cron": e.cron,
                    "timezone": e.timezone,
                    "next_fire": _iso(nxt),
                    "last_outcome": run.status if run else None,
                    "last_finished_at": _iso(run.finished_at) if run else None,
                    "last_run_id": run.id if run else None,
                    "paused": e.paused,
                    "definition_hash": e.config_hash,
                }
                for e, run, nxt in rows
            ]
        )
        return
    t = table("NAME", "SCHEDULE", "ZONE", "NEXT FIRE", "LAST OUTCOME", "FINISHED", "PAUSED")
    for e, run, nxt in rows:
        finished = run.finished_at if run else None
        _add_row(
            t,
            e.name,
            e.cron or "(trigger only)",
            e.timezone,
            when(nxt, _zone(e.timezone)) if nxt else "-",
            run.status if run else None,
            _ago(now - finished) if finished else "-",
            "yes" if e.paused else "no",
        )
    out.print(t)
    if not rows:
        _say("no jobs in the catalog: a worker publishes its jobs when it starts")


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@jobs_app.command("next")
def jobs_next(
    name: str = typer.Argument(..., help="Job name."),
    count: int = typer.Option(5, "-n", min=1, max=1000, help="How many fire times."),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """The job's next fire times, in its zone."""
    cfg = _config(config)
    with open_store(cfg) as store:
        entry = store.get_job(name)
        now = store.now()
    if entry.cron is None:
        if as_json:
            print_json([])
        else:
            _say(f"{name} has no cron: it runs only when enqueued or triggered")
        return
    schedule = Schedule(entry.cron, _zone(entry.timezone))
    times: list[datetime] = []
    at = now
    for _ in range(count):
        at = schedule.next_after(at)
        times.append(at)
    if as_json:
        print_json([t.isoformat() for t in times])
        return
    tz = _zone(entry.timezone)
    t = table("FIRE TIME (" + entry.timezone + ")", "UTC", "IN")
    for x in times:
        _add_row(t, when(x, tz), when(x), _ago(now - x))
    out.print(t)
    if entry.paused:
        _say(f"{name} is paused: these slots will be recorded skipped (reason paused)")


def _set_paused(name: str, paused: bool, config: Path | None) -> None:
    cfg = _config(config)
    with open_store(cfg) as store:
        store.set_paused(name, paused)
    if paused:
        _say(
            f"paused {name}: every replica records its slots skipped (reason paused) until "
            f"`jobrunner jobs resume {name}`; runs already running go on"
        )
    else:
        _say(f"resumed {name}: its next slots run")


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
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Queue a run of a job now (a manual run); a worker starts it."""
    arguments = _parse_kwargs(kwargs)
    limit = _duration(timeout, "--timeout") if timeout is not None else None
    cfg = _config(config)
    with open_store(cfg) as store:
        run = store.enqueue(
            name, arguments, idempotency_key=idempotency_key, correlation_id=correlation_id
        )
        if not wait:
            if as_json:
                print_json(run.as_dict())
            else:
                _say(f"queued run {run.id} of {name}")
            return
        if not as_json:
            _say(f"queued run {run.id} of {name}; waiting for it to finish")
        now = store.now()
        if not any(
            name in w.jobs and now - w.last_seen <= cfg.worker.lease_ttl
            for w in store.list_workers()
        ):
            err.print(
                f"warning: no live worker defines {name}: the run waits until one starts",
                markup=False,
                highlight=False,
            )
        final = _follow(store, run, limit, quiet=as_json)
    if as_json:
        print_json(final.as_dict() if final else run.as_dict())
    if final is None:
        fail(f"run {run.id} not finished after {format_duration(limit or timedelta(0))}")
    if final.status != "succeeded":
        raise typer.Exit(1)


def _follow(store: Store, run: Run, limit: timedelta | None, *, quiet: bool) -> Run | None:
    """Poll the run and its retries until the newest attempt is final; None on timeout."""
    deadline = None if limit is None else time.monotonic() + limit.total_seconds()
    seen: dict[int, str] = {}
    while True:
        attempts = store.run_attempts(run.id)
        for a in attempts:
            if seen.get(a.id) != a.status and not quiet:
                _say(_progress(a))
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
    detail = _error_line(run)
    if run.status in FINAL_STATUSES:
        took = _duration_of(run)
        head = f"{head} in {took}" if took != "-" else head
    return f"{head} ({detail})" if detail else head


# -- runs ---------------------------------------------------------------------------------


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
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Runs, newest first."""
    _check_status(status)
    cfg = _config(config)
    with open_store(cfg) as store:
        now = store.now()
        start = _instant(since, "--since", now) if since is not None else None
        if job is not None and not store.has_runs(job):
            store.get_job(job)  # an unknown job is bad input (exit 2)
        runs = store.list_runs(
            job=job, status=status, since=start, correlation_id=correlation_id, limit=limit
        )
    if as_json:
        print_json([r.as_dict() for r in runs])
        return
    t = table(
        "ID", "JOB", "TRIGGER", "SLOT", "ATTEMPT", "STATUS", "WORKER", "STARTED", "TOOK", "REASON"
    )
    for r in runs:
        _add_row(
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
            _duration_of(r),
            _error_line(r),
        )
    out.print(t)


@runs_app.command("show")
def runs_show(
    run_id: int = typer.Argument(..., help="Run id."),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Every field of a run, its error with the traceback, and all its attempts."""
    cfg = _config(config)
    with open_store(cfg) as store:
        run = store.get_run(run_id)
        attempts = store.run_attempts(run_id)
    if as_json:
        print_json({**run.as_dict(), "attempts": [a.as_dict() for a in attempts]})
        return
    fields = table("FIELD", "VALUE")
    for key, value in run.as_dict().items():
        if key == "error":
            continue
        if key == "kwargs":
            value = json.dumps(value, sort_keys=True)
        _add_row(fields, key, value)
    out.print(fields)
    if run.error:
        _say("")
        _say(f"error: {run.error.get('type')}: {run.error.get('message')}")
        if run.error.get("traceback"):
            _say(str(run.error["traceback"]).rstrip())
    _say("")
    _say(f"attempts ({len(attempts)}):")
    t = table(
        "ID", "ATTEMPT", "TRIGGER", "STATUS", "WORKER", "STARTED", "FINISHED", "TOOK", "REASON"
    )
    for a in attempts:
        _add_row(
            t,
            a.id,
            f"{a.attempt}/{a.max_attempts}",
            a.trigger,
            a.status,
            a.worker_id,
            when(a.started_at) if a.started_at else "-",
            when(a.finished_at) if a.finished_at else "-",
            _duration_of(a),
            _error_line(a),
        )
    out.print(t)


@runs_app.command("cancel")
def runs_cancel(
    run_id: int = typer.Argument(..., help="Run id."), config: Path | None = ConfigOption
) -> None:
    """Cancel a run: a queued run at once; a running one at its worker's next heartbeat.

    Exit 1 if the run had already finished."""
    cfg = _config(config)
    with open_store(cfg) as store:
        before = store.get_run(run_id)
        after = store.cancel_run(run_id)
    if before.status == "queued" and after.status == "cancelled":
        _say(f"cancelled run {run_id} (it was queued)")
    elif after.status == "running":
        _say(
            f"cancel requested for run {run_id}: worker {after.worker_id} cancels it at its next "
            f"heartbeat (see `jobrunner runs show {run_id}`)"
        )
    elif after.status == "cancelled":
        _say(f"run {run_id} is already cancelled")
    else:
        fail(f"run {run_id} already finished: {after.status}")


# -- locks, workers -----------------------------------------------------------------------


@locks_app.command("list")
def locks_list(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Leases held now: job, holder, fence token, expiry (by the database clock)."""
    cfg = _config(config)
    with open_store(cfg) as store:
        now = store.now()
        locks = store.list_locks()
    if as_json:
        print_json(
            [
                {
                    "job": lock.job_name,
                    "slot": lock.slot,
                    "run_id": lock.run_id,
                    "holder": lock.worker_id,
                    "fence": lock.fence,
                    "acquired_at": _iso(lock.acquired_at),
                    "expires_at": _iso(lock.expires_at),
                    "expires_in": (
                        None if lock.expires_at is None else (lock.expires_at - now).total_seconds()
                    ),
                }
                for lock in locks
            ]
        )
        return
    t = table("JOB", "SLOT", "RUN", "HOLDER", "FENCE", "ACQUIRED", "EXPIRES IN")
    for lock in locks:
        expires = "-"
        if lock.expires_at is not None:
            left = (lock.expires_at - now).total_seconds()
            expires = _span(left) if left >= 0 else f"expired {_span(left)} ago"
        _add_row(
            t,
            lock.job_name,
            lock.slot,
            lock.run_id,
            lock.worker_id,
            lock.fence,
            when(lock.acquired_at),
            expires,
        )
    out.print(t)
    if not locks:
        _say("no leases held: no job is running")


@workers_app.command("list")
def workers_list(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Workers: id, host, pid, version, config hash, last seen, alive or stale.

    A worker is stale when it has not been seen within this config's lease_ttl."""
    cfg = _config(config)
    ttl = cfg.worker.lease_ttl
    with open_store(cfg) as store:
        now = store.now()
        workers = store.list_workers()
    rows = [
        {
            "worker_id": w.worker_id,
            "hostname": w.hostname,
            "pid": w.pid,
            "version": w.version,
            "config_hash": w.config_hash,
            "state": w.state,
            "started_at": w.started_at.isoformat(),
            "last_seen": w.last_seen.isoformat(),
            "seen_seconds_ago": round((now - w.last_seen).total_seconds(), 3),
            "alive": now - w.last_seen <= ttl,
            "jobs": dict(w.jobs),
        }
        for w in workers
    ]
    if as_json:
        print_json(rows)
        return
    t = table(
        "ID", "HOST", "PID", "VERSION", "CONFIG HASH", "STATE", "STARTED", "LAST SEEN", "STATUS"
    )
    for w, r in zip(workers, rows, strict=True):
        _add_row(
            t,
            w.worker_id,
            w.hostname,
            w.pid,
            w.version,
            w.config_hash,
            w.state,
            when(w.started_at),
            _ago(now - w.last_seen),
            "alive" if r["alive"] else "stale",
        )
    out.print(t)
    hashes = {w.config_hash for w in workers}
    if len(hashes) > 1:
        _say(f"{len(hashes)} different config hashes: version skew (a rolling deploy in progress?)")
    if not workers:
        _say("no workers registered")


# -- prune, plan --------------------------------------------------------------------------


@app.command()
def prune(
    older_than: str | None = typer.Option(
        None,
        "--older-than",
        help="Delete finished runs older than this (default: [history] retention, 30d).",
    ),
    keep_last: int | None = typer.Option(
        None,
        "--keep-last",
        min=0,
        help="Keep the newest N finished runs of each job (default: [history] keep_last).",
    ),
    config: Path | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Delete old run history (finished runs only; queued and running runs stay)."""
    cfg = _config(config)
    if older_than is not None:
        age: timedelta | None = _duration(older_than, "--older-than")
    else:
        age = cfg.history.retention
    keep = cfg.history.keep_last if keep_last is None else keep_last
    if age is None:
        fail("nothing to prune: [history] retention is off; pass --older-than", 2)
    with open_store(cfg) as store:
        deleted = store.prune(older_than=age, keep_last=keep)
    if as_json:
        print_json(
            {"deleted": deleted, "older_than_seconds": age.total_seconds(), "keep_last": keep}
        )
        return
    kept = f", keeping the newest {keep} per job" if keep else ""
    _say(f"pruned {deleted} finished run(s) older than {format_duration(age)}{kept}")


PLAN_IGNORED = frozenset({"name"})


def _changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    keys = (set(old) | set(new)) - PLAN_IGNORED
    return {k: (old.get(k), new.get(k)) for k in sorted(keys) if old.get(k) != new.get(k)}


@app.command()
def plan(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Show what starting a worker with this file would change in the catalog.

    Like `terraform plan`: jobs added, changed (with the differing keys) and removed. It
    writes nothing."""
    cfg = _config(config)
    with open_store(cfg) as store:
        catalog = {e.name: e for e in store.list_jobs()}
        now = store.now()
        live = [w for w in store.list_workers() if now - w.last_seen <= cfg.worker.lease_ttl]
    wanted = {j.name: j.definition() for j in cfg.jobs}
    added = sorted(set(wanted) - set(catalog))
    removed = sorted(set(catalog) - set(wanted))
    changed = {
        name: diff
        for name in sorted(set(wanted) & set(catalog))
        if (diff := _changes(dict(catalog[name].definition), wanted[name]))
    }
    unchanged = len(set(wanted) & set(catalog)) - len(changed)
    still_defined = {name: sorted(w.worker_id for w in live if name in w.jobs) for name in removed}
    if as_json:
        print_json(
            {
                "add": {name: wanted[name] for name in added},
                "change": {
                    name: {k: {"from": a, "to": b} for k, (a, b) in diff.items()}
                    for name, diff in changed.items()
                },
                "remove": {
                    name: {"defined_by_live_workers": still_defined[name]} for name in removed
                },
                "unchanged": unchanged,
                "config_hash": cfg.config_hash,
                "live_worker_config_hashes": sorted({w.config_hash for w in live}),
            }
        )
        return
    for name in added:
        _say(f"+ {name}")
        for key, value in wanted[name].items():
            if key not in PLAN_IGNORED and value is not None:
                _say(f"    {key}: {json.dumps(value)}")
    for name, diff in changed.items():
        _say(f"~ {name}")
        for key, (a, b) in diff.items():
            _say(f"    {key}: {json.dumps(a)} -> {json.dumps(b)}")
    for name in removed:
        holders = still_defined[name]
        note = (
            f"retired once no live worker defines it ({len(holders)} still do)"
            if holders
            else "retired at the next heartbeat of a worker started with this file"
        )
        _say(f"- {name}  ({note})")
    _say(
        f"Plan: {len(added)} to add, {len(changed)} to change, {len(removed)} to remove, "
        f"{unchanged} unchanged."
    )
    other = sorted({w.config_hash for w in live} - {cfg.config_hash})
    if other:
        _say(
            f"this file's config hash is {cfg.config_hash}; live workers run {', '.join(other)}: "
            f"the newest started worker's definition of a job is the one that is scheduled"
        )


# -- why ----------------------------------------------------------------------------------


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
    cfg = _config(config)
    with open_store(cfg) as store:
        entry = store.get_job(job)
        if entry.cron is None:
            fail(f"job {job!r} has no cron, so no slots: see `jobrunner runs list --job {job}`", 2)
        tz = _zone(entry.timezone)
        now = store.now()
        start = _instant(since, "--since", now, tz)
        end = _instant(until, "--until", now, tz) if until is not None else now
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
    _say(
        f"{job}: cron {entry.cron!r} in {entry.timezone}, {len(expected)} expected slot(s) from "
        f"{when(window_start, tz)} to {when(end, tz)}" + (" (paused now)" if entry.paused else "")
    )
    if truncated:
        _say(f"the window has more than {WHY_MAX_SLOTS} slots: showing the newest {WHY_MAX_SLOTS}")
    t = table("SLOT (" + entry.timezone + ")", "WHAT HAPPENED", "ATTEMPTS", "WORKER", "RUNS", "WHY")
    for group in _collapse(reports):
        first_r, last_r = group[0], group[-1]
        label = when(first_r.slot, tz)
        if len(group) > 1:
            end_label = last_r.slot.astimezone(tz).strftime("%H:%M:%S")
            label = f"{label} .. {end_label} ({len(group)} slots)"
        _add_row(
            t,
            label,
            _what(first_r),
            first_r.attempts or "-",
            first_r.worker,
            ",".join(str(i) for i in first_r.run_ids) or "-",
            _why_text(first_r),
        )
    out.print(t)
    _say("summary: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no slots"))


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
