"""`jobrunner notify status|test`: the `[[notify]]` targets and their outbox.

`status` shows each target of the config with its events: pending (and the most attempts one
of them had: a target that keeps failing), delivered, dropped, and the last error. `test
TARGET` sends a signed sample event to one target now, as the notifier would.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import typer

from jobrunner.cli.app import (
    ConfigOption,
    JsonOption,
    add_row,
    app,
    fail,
    load_settings,
    open_store,
    out,
    print_json,
    say,
    table,
    when,
)
from jobrunner.notify import NotifyTarget

notify_app = typer.Typer(help="Notification targets: status, test.", no_args_is_help=True)
app.add_typer(notify_app, name="notify")


def shown_url(target: NotifyTarget) -> str:
    """The URL without its query or credentials (they may hold a secret)."""
    parts = urlsplit(target.url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


@notify_app.command("status")
def notify_status(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Each target's events: pending, delivered, dropped, and its last error."""
    cfg = load_settings(config)
    with open_store(cfg) as store:
        rows = store.outbox_status()
    if as_json:
        print_json({"targets": [{"name": t.name, "url": shown_url(t), "events": list(t.events),
                                 "jobs": list(t.jobs)} for t in cfg.notify],
                    "outbox": rows})  # fmt: skip
        return
    if not cfg.notify:
        say("no [[notify]] targets in this config")
    t = table("TARGET", "URL", "EVENTS", "JOBS")
    for target in cfg.notify:
        add_row(t, target.name, shown_url(target), ",".join(target.events), ",".join(target.jobs))
    out.print(t)
    t = table("TARGET", "STATUS", "EVENTS", "OLDEST", "MOST ATTEMPTS", "LAST ERROR")
    for r in rows:
        add_row(t, r["target"], r["status"], r["count"], when(r["oldest"]), r["most_attempts"],
                r["last_error"])  # fmt: skip
    out.print(t)
    failing = [r for r in rows if r["status"] == "pending" and (r["most_attempts"] or 0) > 1]
    for r in failing:
        say(f"warning: {r['target']}: {r['count']} event(s) waiting, retried up to "
            f"{r['most_attempts']} times; last error: {r['last_error']}")  # fmt: skip


@notify_app.command("test")
def notify_test(
    target: str = typer.Argument(..., help="The target's name ([[notify]] name, or notify-N)."),
    config: Path | None = ConfigOption,
) -> None:
    """Send a signed sample event to one target now."""
    from jobrunner.worker.notifier import post

    cfg = load_settings(config)
    chosen = next((t for t in cfg.notify if target in (t.name, t.url)), None)
    if chosen is None:
        names = ", ".join(t.name for t in cfg.notify) or "none in this config"
        fail(f"no notify target {target!r}: allowed: {names}", 2)
    body: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "event": "test",
        "job": "jobrunner-test",
        "run_id": None,
        "attempt": None,
        "status": None,
        "error": None,
        "scheduled_for": None,
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    try:
        post(chosen, body)
    except RuntimeError as exc:
        fail(f"{chosen.name} ({shown_url(chosen)}): not delivered: {exc}")
    signed = "signed" if chosen.secret else "unsigned (no secret)"
    say(f"delivered a sample event to {chosen.name} ({shown_url(chosen)}), {signed}")
