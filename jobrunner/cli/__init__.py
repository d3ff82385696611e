"""The `jobrunner` command line: one module per command group, thin over the config and
the store's `AdminPort`.

`jobrunner.cli.app` holds the typer app and what the commands share; each command module
imports it and registers its commands. Importing this package imports them all, so `app`
here has every command. The order below is the order of `jobrunner --help`: the top-level
commands first (run, check, prune, plan, why, health, web), then the groups (db, jobs, runs,
schedules, notify, locks, workers). No command module imports another, nor this package.

Exit codes: 0 ok, 1 failure, 2 bad input (with a one-line message per problem, no traceback).
"""

from __future__ import annotations

# The order of registration is the order of `jobrunner --help`.
# isort: off
from jobrunner.cli import core  # noqa: F401
from jobrunner.cli import db  # noqa: F401
from jobrunner.cli import jobs  # noqa: F401
from jobrunner.cli import runs  # noqa: F401
from jobrunner.cli import schedules  # noqa: F401
from jobrunner.cli import notify  # noqa: F401
from jobrunner.cli import cluster  # noqa: F401
from jobrunner.cli import plan  # noqa: F401
from jobrunner.cli import why  # noqa: F401
from jobrunner.cli import health  # noqa: F401
from jobrunner.cli import web  # noqa: F401

# isort: on
from jobrunner.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Run the command line (`jobrunner` without `run [-c FILE]`: see `jobrunner.__main__`)."""
    app()
