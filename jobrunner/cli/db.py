"""`jobrunner db upgrade|status`: the database schema."""

from __future__ import annotations

from pathlib import Path

import typer

from jobrunner.cli.app import (
    ConfigOption,
    app,
    load_settings,
    open_store,
    out,
    print_json,
)
from jobrunner.config import mask_url

db_app = typer.Typer(help="Database schema: upgrade and status.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    config: Path | None = ConfigOption,
    revision: str = typer.Option("head", help="Target revision."),
) -> None:
    """Migrate the database schema (run before a rolling deploy)."""
    cfg = load_settings(config)
    with open_store(cfg) as store:
        status = store.upgrade_schema(revision)
    out.print(f"database {mask_url(cfg.database.url)} at revision {status.current}")


@db_app.command("status")
def db_status(
    config: Path | None = ConfigOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the schema revision: current, expected, up to date. Exit 1 when behind."""
    cfg = load_settings(config)
    with open_store(cfg) as store:
        status = store.schema_status()
    data = {"current": status.current, "head": status.head, "up_to_date": status.up_to_date}
    if as_json:
        print_json(data)
    else:
        state = "up to date" if status.up_to_date else "behind: run `jobrunner db upgrade`"
        out.print(f"current {status.current or '(empty)'}, head {status.head}: {state}")
    if not status.up_to_date:
        raise typer.Exit(1)
