"""`jobrunner plan`: what starting a worker with this file would change in the catalog.

`plan_changes` computes the plan from what the store returned and the file's job
definitions; `plan` asks the store and renders the plan as text or as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
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
from jobrunner.records import CatalogEntry, WorkerRow

PLAN_IGNORED = frozenset({"name"})


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Jobs added, changed and removed, each by name in name order."""

    add: dict[str, Mapping[str, Any]]  # the file's definition of each new job
    change: dict[str, dict[str, tuple[Any, Any]]]  # per job: key -> (catalog's, file's)
    remove: dict[str, list[str]]  # per job: the live workers that still define it
    unchanged: int
    live_hashes: list[str]  # the config hashes of the live workers, sorted

    def as_dict(self, config_hash: str) -> dict[str, Any]:
        """The JSON of `jobrunner plan --json` for a file with `config_hash`."""
        return {
            "add": dict(self.add),
            "change": {
                name: {k: {"from": a, "to": b} for k, (a, b) in diff.items()}
                for name, diff in self.change.items()
            },
            "remove": {
                name: {"defined_by_live_workers": holders} for name, holders in self.remove.items()
            },
            "unchanged": self.unchanged,
            "config_hash": config_hash,
            "live_worker_config_hashes": self.live_hashes,
        }


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    keys = (set(old) | set(new)) - PLAN_IGNORED
    return {k: (old.get(k), new.get(k)) for k in sorted(keys) if old.get(k) != new.get(k)}


def plan_changes(
    catalog: Sequence[CatalogEntry],
    wanted: Mapping[str, Mapping[str, Any]],
    workers: Sequence[WorkerRow],
    *,
    now: datetime,
    lease_ttl: timedelta,
) -> Plan:
    """The plan from the catalog to the definitions `wanted` (by job name). A worker is live
    when it was seen within `lease_ttl` of `now` (the database's clock)."""
    entries = {e.name: e for e in catalog}
    live = [w for w in workers if now - w.last_seen <= lease_ttl]
    both = sorted(set(wanted) & set(entries))
    change = {
        name: diff for name in both if (diff := _changes(entries[name].definition, wanted[name]))
    }
    return Plan(
        add={name: wanted[name] for name in sorted(set(wanted) - set(entries))},
        change=change,
        remove={
            name: sorted(w.worker_id for w in live if name in w.jobs)
            for name in sorted(set(entries) - set(wanted))
        },
        unchanged=len(both) - len(change),
        live_hashes=sorted({w.config_hash for w in live}),
    )


@app.command()
def plan(config: Path | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Show what starting a worker with this file would change in the catalog.

    Like `terraform plan`: jobs added, changed (with the differing keys) and removed. It
    writes nothing."""
    cfg = load_settings(config)
    with open_store(cfg) as store:
        catalog = store.list_jobs()
        now = store.now()
        workers = store.list_workers()
    wanted = {j.name: j.definition() for j in cfg.jobs}
    changes = plan_changes(catalog, wanted, workers, now=now, lease_ttl=cfg.worker.lease_ttl)
    if as_json:
        print_json(changes.as_dict(cfg.config_hash))
    else:
        _print_plan(changes, cfg.config_hash)


def _print_plan(plan: Plan, config_hash: str) -> None:
    for name, definition in plan.add.items():
        say(f"+ {name}")
        for key, value in definition.items():
            if key not in PLAN_IGNORED and value is not None:
                say(f"    {key}: {json.dumps(value)}")
    for name, diff in plan.change.items():
        say(f"~ {name}")
        for key, (a, b) in diff.items():
            say(f"    {key}: {json.dumps(a)} -> {json.dumps(b)}")
    for name, holders in plan.remove.items():
        note = (
            f"retired once no live worker defines it ({len(holders)} still do)"
            if holders
            else "retired at the next heartbeat of a worker started with this file"
        )
        say(f"- {name}  ({note})")
    say(
        f"Plan: {len(plan.add)} to add, {len(plan.change)} to change, {len(plan.remove)} to "
        f"remove, {plan.unchanged} unchanged."
    )
    other = sorted(set(plan.live_hashes) - {config_hash})
    if other:
        say(
            f"this file's config hash is {config_hash}; live workers run {', '.join(other)}: "
            f"the newest started worker's definition of a job is the one that is scheduled"
        )
