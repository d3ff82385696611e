"""`jobrunner plan`: what starting a worker with this file would change in the catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jobrunner.cli.app import (
    ConfigOption,
    JsonOption,
    app,
    load_settings,
    open_store,
    print_json,
    say,
)

PLAN_IGNORED = frozenset({"name"})


def _changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    keys = (set(old) | set(new)) - PLAN_IGNORED
    return {k: (old.get(k), new.get(k)) for k in sorted(keys) if old.get(k) != new.get(k)}


@app.command()
def plan(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Show what starting a worker with this file would change in the catalog.

    Like `terraform plan`: jobs added, changed (with the differing keys) and removed. It
    writes nothing."""
    cfg = load_settings(config)
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
        say(f"+ {name}")
        for key, value in wanted[name].items():
            if key not in PLAN_IGNORED and value is not None:
                say(f"    {key}: {json.dumps(value)}")
    for name, diff in changed.items():
        say(f"~ {name}")
        for key, (a, b) in diff.items():
            say(f"    {key}: {json.dumps(a)} -> {json.dumps(b)}")
    for name in removed:
        holders = still_defined[name]
        note = (
            f"retired once no live worker defines it ({len(holders)} still do)"
            if holders
            else "retired at the next heartbeat of a worker started with this file"
        )
        say(f"- {name}  ({note})")
    say(
        f"Plan: {len(added)} to add, {len(changed)} to change, {len(removed)} to remove, "
        f"{unchanged} unchanged."
    )
    other = sorted({w.config_hash for w in live} - {cfg.config_hash})
    if other:
        say(
            f"this file's config hash is {cfg.config_hash}; live workers run {', '.join(other)}: "
            f"the newest started worker's definition of a job is the one that is scheduled"
        )
