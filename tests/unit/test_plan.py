"""`jobrunner plan`'s computation: pure, from catalog rows, definitions and workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from jobrunner.cli.plan import plan_changes
from jobrunner.records import CatalogEntry, WorkerRow

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=30)


def entry(name: str, **definition: Any) -> CatalogEntry:
    return CatalogEntry(
        name=name,
        cron=definition.get("cron"),
        timezone="UTC",
        config_hash="h-" + name,
        definition={"name": name, **definition},
    )


def worker(worker_id: str, jobs: list[str], seen_ago: float, config_hash: str = "c1") -> WorkerRow:
    return WorkerRow(
        worker_id=worker_id,
        hostname="h",
        pid=1,
        version="0",
        config_hash=config_hash,
        jobs={name: "h-" + name for name in jobs},
        state="running",
        started_at=NOW - timedelta(hours=1),
        last_seen=NOW - timedelta(seconds=seen_ago),
    )


def test_jobs_are_added_changed_removed_or_unchanged() -> None:
    catalog = [
        entry("same", cron="* * * * *", retries=0),
        entry("moved", cron="0 3 * * *", retries=1, timeout=60),
        entry("gone", cron="0 4 * * *"),
    ]
    wanted = {
        "same": {"name": "same", "cron": "* * * * *", "retries": 0},
        "moved": {"name": "moved", "cron": "0 5 * * *", "retries": 1, "jitter": 5},
        "new": {"name": "new", "cron": None},
    }
    plan = plan_changes(catalog, wanted, [], now=NOW, lease_ttl=TTL)
    assert plan.add == {"new": {"name": "new", "cron": None}}
    assert plan.change == {
        "moved": {"cron": ("0 3 * * *", "0 5 * * *"), "jitter": (None, 5), "timeout": (60, None)}
    }
    assert list(plan.change["moved"]) == ["cron", "jitter", "timeout"], "keys in name order"
    assert plan.remove == {"gone": []}
    assert plan.unchanged == 1


def test_the_name_key_is_never_a_change() -> None:
    catalog = [entry("a", cron="* * * * *")]
    wanted = {"a": {"name": "renamed in the definition only", "cron": "* * * * *"}}
    plan = plan_changes(catalog, wanted, [], now=NOW, lease_ttl=TTL)
    assert (plan.change, plan.unchanged) == ({}, 1)


def test_names_come_sorted() -> None:
    catalog = [entry("z-gone"), entry("a-gone"), entry("m", retries=1), entry("b", retries=1)]
    wanted = {"y": {}, "c": {}, "m": {"retries": 2}, "b": {"retries": 2}}
    plan = plan_changes(catalog, wanted, [], now=NOW, lease_ttl=TTL)
    assert (list(plan.add), list(plan.change), list(plan.remove)) == (
        ["c", "y"],
        ["b", "m"],
        ["a-gone", "z-gone"],
    )


def test_only_live_workers_count_for_removed_jobs_and_hashes() -> None:
    catalog = [entry("gone"), entry("kept")]
    workers = [
        worker("w2", ["gone", "kept"], seen_ago=5, config_hash="c2"),
        worker("w1", ["gone"], seen_ago=30, config_hash="c1"),  # seen exactly lease_ttl ago
        worker("w3", ["gone"], seen_ago=31, config_hash="c3"),  # stale
        worker("w4", ["kept"], seen_ago=1, config_hash="c1"),
    ]
    plan = plan_changes(catalog, {"kept": {}}, workers, now=NOW, lease_ttl=TTL)
    assert plan.remove == {"gone": ["w1", "w2"]}
    assert plan.live_hashes == ["c1", "c2"]


def test_the_plan_as_json() -> None:
    catalog = [entry("moved", cron="0 3 * * *"), entry("gone")]
    wanted = {"moved": {"cron": "0 5 * * *"}, "new": {"name": "new", "retries": 2}}
    workers = [worker("w1", ["gone"], seen_ago=1, config_hash="old")]
    data = plan_changes(catalog, wanted, workers, now=NOW, lease_ttl=TTL).as_dict("mine")
    assert data == {
        "add": {"new": {"name": "new", "retries": 2}},
        "change": {"moved": {"cron": {"from": "0 3 * * *", "to": "0 5 * * *"}}},
        "remove": {"gone": {"defined_by_live_workers": ["w1"]}},
        "unchanged": 0,
        "config_hash": "mine",
        "live_worker_config_hashes": ["old"],
    }


def test_changed_keys_and_live_hashes_come_sorted() -> None:
    keys = ["k" + c for c in "hcfaigdbje"]
    catalog = [entry("a", **dict.fromkeys(keys, 1))]
    wanted = {"a": dict.fromkeys(keys, 2)}
    workers = [worker(f"w{i}", ["a"], seen_ago=1, config_hash=h) for i, h in enumerate(keys)]
    plan = plan_changes(catalog, wanted, workers, now=NOW, lease_ttl=TTL)
    assert list(plan.change["a"]) == sorted(keys)
    assert plan.live_hashes == sorted(keys)
