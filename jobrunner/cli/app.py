"""The `jobrunner` typer app and what every command module shares: the options, the
consoles, loading the config, opening the store, argument parsers and output helpers.

This module imports no command module: each of them imports it and registers its commands
on `app` (see `jobrunner.cli`). Exit codes: 0 ok, 1 failure, 2 bad input (with a one-line
message per problem, no traceback).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from jobrunner.config import (
    Config,
    format_duration,
    load_config,
    parse_duration,
    resolve_config_path,
)
from jobrunner.daemon import failure
from jobrunner.errors import ConfigError
from jobrunner.records import Run
from jobrunner.store.access import AdminStore
from jobrunner.store.ports import AdminPort
from jobrunner.store.tables import RUN_STATUSES

app = typer.Typer(
    name="jobrunner",
    help="A distributed cron and job-runner daemon: every slot runs once, nothing is lost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)  # one line per error, never wrapped

ConfigOption = typer.Option(
    None,
    "-c",
    "--config",
    help="Config file (default: $JOBRUNNER_CONFIG, else ./jobrunner.toml).",
    show_default=False,
)
JsonOption = typer.Option(False, "--json", help="Print JSON (for scripts).")


# -- config and store ---------------------------------------------------------------------


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


def load_settings(config: Path | None) -> Config:
    """The config without importing job code: the commands that only read the database."""
    return load(config, import_funcs=False)


@contextmanager
def open_store(cfg: Config) -> Iterator[AdminPort]:
    """The store of the config's database. A known error (an unknown job or run, bad input,
    the database down) ends the command with one line and its exit code; others keep their
    traceback."""
    store: AdminPort = AdminStore.from_url(cfg.database.url)
    try:
        yield store
    except Exception as exc:
        known = failure(exc, cfg.database.url)
        if known is None:
            raise
        fail(*known)
    finally:
        store.close()


# -- arguments ----------------------------------------------------------------------------


def duration(value: str, option: str) -> timedelta:
    """A duration option (`30s`, `1h`); bad input exits 2."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        fail(f"{option}: {exc}", 2)


def integer(value: str | None, option: str) -> int | None:
    """An integer option given as text (typer's own error would be a box, not one line)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        fail(f"{option}: expected an integer, got {value!r}", 2)


def instant(value: str, option: str, now: datetime, tz: ZoneInfo | Any = UTC) -> datetime:
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


def zone(name: str) -> ZoneInfo:
    """A catalog entry's zone; UTC for a name this tzdata does not know."""
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError):  # a catalog written by a newer tzdata
        return ZoneInfo("UTC")


def parse_kwargs(text: str | None) -> dict[str, Any] | None:
    """`--kwargs`: a JSON object, or None when not given; bad input exits 2."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--kwargs is not valid JSON: {exc.msg} at column {exc.colno}", 2)
    if not isinstance(value, dict):
        fail(f'--kwargs must be a JSON object like \'{{"region": "eu"}}\', got {text!r}', 2)
    return value


def check_status(value: str | None) -> None:
    """`--status`: one of the run statuses, or not given; bad input exits 2."""
    if value is not None and value not in RUN_STATUSES:
        fail(f"--status: unknown status {value!r}: allowed {', '.join(RUN_STATUSES)}", 2)


# -- output -------------------------------------------------------------------------------


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def say(message: str) -> None:
    """A line of plain text on stdout (no markup, no highlighting, never wrapped)."""
    out.print(message, markup=False, highlight=False, soft_wrap=True)


def when(value: datetime | None, tz: Any = UTC) -> str:
    return "-" if value is None else value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def overlap_text(overlap: str | None, max_concurrency: int | None) -> str:
    """A job's effective overlap policy as `check` and `jobs list` show it."""
    if overlap == "allow":
        return f"allow (max {max_concurrency})" if max_concurrency else "allow"
    return overlap or "-"


def limits_text(definition: Mapping[str, Any]) -> str:
    """A job's overlap and limits as `check` and `jobs list` show them: `allow (max 4)`,
    `allow (2 per tenant, 100/1m per tenant)`, `forbid`."""
    text = overlap_text(definition.get("overlap"), definition.get("max_concurrency"))
    key = definition.get("concurrency_key")
    per = f" per {key}" if key else ""
    limits = []
    if definition.get("max_per_key"):
        limits.append(f"{definition['max_per_key']}{per}")
    if definition.get("rate_limit"):
        limits.append(f"{definition['rate_limit']}{per}")
    if definition.get("priority"):
        limits.append(f"priority {definition['priority']}")
    return f"{text} ({', '.join(limits)})" if limits else text


def table(*columns: str) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c)
    return t


def add_row(t: Table, *values: object) -> None:
    """Add a row of plain text: nothing from the database is read as rich markup."""
    t.add_row(*(Text("-" if v is None else str(v)) for v in values))


def span(seconds: float) -> str:
    """A short human duration: 850ms, 3.1s, 12m5s, 2d3h."""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return format_duration(timedelta(seconds=round(seconds)))


def ago(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    return f"{span(seconds)} ago" if seconds >= 0 else f"in {span(seconds)}"


def took(run: Run) -> str:
    """How long the run ran, or "-" if it has not finished."""
    if run.started_at is None or run.finished_at is None:
        return "-"
    return span((run.finished_at - run.started_at).total_seconds())


def error_line(run: Run) -> str | None:
    if run.error:
        return f"{run.error.get('type')}: {run.error.get('message')}"
    return run.reason
