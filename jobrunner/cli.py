"""The `jobrunner` command line. Thin over the config, the store and the worker.

Exit codes: 0 ok, 1 failure, 2 bad input (with a one-line message per problem, no traceback).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from jobrunner.config import Config, load_config, mask_url, resolve_config_path
from jobrunner.daemon import failure, run_worker
from jobrunner.errors import ConfigError, JobrunnerError
from jobrunner.store import migrate
from jobrunner.store.store import Store

app = typer.Typer(
    name="jobrunner",
    help="A distributed cron and job-runner daemon: every slot runs once, nothing is lost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema: upgrade and status.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)  # one line per error, never wrapped

ConfigOption = typer.Option(
    None,
    "-c",
    "--config",
    help="Config file (default: $JOBRUNNER_CONFIG, else ./jobrunner.toml).",
    show_default=False,
)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"error: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def load(config: Path | None, *, import_funcs: bool = True) -> Config:
    """Load and validate the config; on errors print each one and exit 2."""
    path = resolve_config_path(config)
    try:
        return load_config(path, import_funcs=import_funcs)
    except ConfigError as exc:
        for issue in exc.issues:
            err.print(f"error: {issue}", markup=False, highlight=False)
        raise typer.Exit(2) from None


@contextmanager
def open_store(cfg: Config) -> Iterator[Store]:
    store = Store.from_url(cfg.database.url)
    try:
        yield store
    except (JobrunnerError, sa.exc.DBAPIError) as exc:
        known = failure(exc, cfg.database.url)
        if known is None:
            raise
        fail(*known)
    finally:
        store.close()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def when(value: datetime | None, tz: Any = UTC) -> str:
    return "-" if value is None else value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def table(*columns: str) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c)
    return t


# -- run, check ---------------------------------------------------------------------------


@app.command()
def run(config: Path | None = ConfigOption) -> None:
    """Start a worker: fire cron slots and queued runs until SIGTERM/SIGINT."""
    raise typer.Exit(run_worker(config))


@app.command()
def check(
    config: Path | None = ConfigOption,
    count: int = typer.Option(3, "-n", min=1, max=100, help="Fire times to show per job."),
) -> None:
    """Validate the config, import every func, print each job's next fire times.

    Jobs with isolation = "process" get their arguments in a child process: kwargs that
    cannot be pickled are an error (exit 2)."""
    from jobrunner.isolation import unpicklable
    from jobrunner.schedule import next_fire_times

    cfg = load(config)
    isolated = [(i, job) for i, job in enumerate(cfg.jobs) if job.isolation == "process"]
    problems = [
        f"{cfg.path}: jobs[{i}].kwargs.{key}: job {job.name!r}: runs with isolation = "
        f"'process', so its arguments must be picklable, but this one is not ({why})"
        for i, job in isolated
        for key, why in unpicklable(job.kwargs).items()
    ]
    for problem in problems:
        err.print(f"error: {problem}", markup=False, highlight=False)
    if problems:
        raise typer.Exit(2)
    now = datetime.now(UTC)
    t = table("JOB", "FUNC", "KIND", "SCHEDULE", "ZONE", "NEXT")
    for job in cfg.jobs:
        kind = "async" if job.is_async else "sync"
        if job.isolation == "process":
            kind += ", process" + (f" (max {job.max_memory} bytes)" if job.max_memory else "")
        if job.cron is None:
            t.add_row(job.name, job.func, kind, "(trigger only)", job.timezone.key, "-")
            continue
        times = next_fire_times(job.cron, job.timezone, now, count)
        t.add_row(
            job.name,
            job.func,
            kind,
            job.cron,
            job.timezone.key,
            "\n".join(when(x, job.timezone) for x in times),
        )
    out.print(t)
    if isolated:
        names = ", ".join(job.name for _, job in isolated)
        out.print(
            f"isolation = 'process' ({names}): each call runs in a child process, so its "
            "arguments (the kwargs here and those given at enqueue) must be picklable; "
            "return values stay in the child"
        )
    out.print(f"{cfg.path}: ok, {len(cfg.jobs)} job(s), database {mask_url(cfg.database.url)}")


# -- db -----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(
    config: Path | None = ConfigOption,
    revision: str = typer.Option("head", help="Target revision."),
) -> None:
    """Migrate the database schema (run before a rolling deploy)."""
    cfg = load(config, import_funcs=False)
    with open_store(cfg) as store:
        status = migrate.upgrade(store.engine, revision)
    out.print(f"database {mask_url(cfg.database.url)} at revision {status.current}")


@db_app.command("status")
def db_status(
    config: Path | None = ConfigOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the schema revision: current, expected, up to date. Exit 1 when behind."""
    cfg = load(config, import_funcs=False)
    with open_store(cfg) as store:
        status = migrate.status(store.engine)
    data = {"current": status.current, "head": status.head, "up_to_date": status.up_to_date}
    if as_json:
        print_json(data)
    else:
        state = "up to date" if status.up_to_date else "behind: run `jobrunner db upgrade`"
        out.print(f"current {status.current or '(empty)'}, head {status.head}: {state}")
    if not status.up_to_date:
        raise typer.Exit(1)


def main() -> None:
    import jobrunner.cli_manage
    import jobrunner.cli_ops  # noqa: F401 - they register their commands on `app`

    app()


if __name__ == "__main__":
    main()
