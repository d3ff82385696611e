"""`jobrunner locks list`, `jobrunner workers list`, `jobrunner prune`: the leases and the
workers the replicas share, and their history's upkeep."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import typer

from jobrunner.cli.app import (
    ConfigOption,
    JsonOption,
    add_row,
    ago,
    app,
    duration,
    fail,
    iso,
    load_settings,
    open_store,
    out,
    print_json,
    say,
    span,
    table,
    when,
)
from jobrunner.config import format_duration

locks_app = typer.Typer(help="Leases held by running jobs.", no_args_is_help=True)
workers_app = typer.Typer(help="Worker processes and their liveness.", no_args_is_help=True)
app.add_typer(locks_app, name="locks")
app.add_typer(workers_app, name="workers")


@locks_app.command("list")
def locks_list(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Leases held now: job, holder, fence token, expiry (by the database clock)."""
    cfg = load_settings(config)
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
                    "acquired_at": iso(lock.acquired_at),
                    "expires_at": iso(lock.expires_at),
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
            expires = span(left) if left >= 0 else f"expired {span(left)} ago"
        add_row(
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
        say("no leases held: no job is running")


@workers_app.command("list")
def workers_list(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Workers: id, host, pid, version, config hash, last seen, alive or stale.

    A worker is stale when it has not been seen within this config's lease_ttl."""
    cfg = load_settings(config)
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
        add_row(
            t,
            w.worker_id,
            w.hostname,
            w.pid,
            w.version,
            w.config_hash,
            w.state,
            when(w.started_at),
            ago(now - w.last_seen),
            "alive" if r["alive"] else "stale",
        )
    out.print(t)
    hashes = {w.config_hash for w in workers}
    if len(hashes) > 1:
        say(f"{len(hashes)} different config hashes: version skew (a rolling deploy in progress?)")
    if not workers:
        say("no workers registered")


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
    cfg = load_settings(config)
    if older_than is not None:
        age: timedelta | None = duration(older_than, "--older-than")
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
    say(f"pruned {deleted} finished run(s) older than {format_duration(age)}{kept}")
