"""The command line's layout: what `jobrunner --help` lists, and which module imports which."""

from __future__ import annotations

import ast
from pathlib import Path

from typer.main import get_command

from jobrunner.cli import app

CLI = Path(__file__).resolve().parents[2] / "jobrunner" / "cli"
COMMAND_MODULES = sorted(
    p.stem for p in CLI.glob("*.py") if p.stem not in ("__init__", "__main__", "app")
)


def test_help_lists_the_commands_then_the_groups_in_their_order() -> None:
    assert list(get_command(app).commands) == [
        "run",
        "check",
        "prune",
        "plan",
        "why",
        "health",
        "web",
        "db",
        "jobs",
        "runs",
        "schedules",
        "notify",
        "locks",
        "workers",
    ]


def imported(path: Path) -> set[str]:
    """The jobrunner.cli modules that `path` imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "jobrunner.cli":
            names |= {f"jobrunner.cli.{a.name}" for a in node.names}  # `from pkg import mod`
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {n for n in names if n == "jobrunner.cli" or n.startswith("jobrunner.cli.")}


def test_command_modules_import_only_the_app_module() -> None:
    assert {"core", "db", "jobs", "runs", "plan", "why"} <= set(COMMAND_MODULES)
    for name in COMMAND_MODULES:
        assert imported(CLI / f"{name}.py") == {"jobrunner.cli.app"}, name
    assert imported(CLI / "app.py") == set(), "the app module imports no command module"
