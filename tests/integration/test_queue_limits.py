"""Concurrency keys, rate limits and queues in the store (SQLite and PostgreSQL).

The claims here are the store's own (`WorkerPort.claim`), as a worker makes them; the
system test `tests/system/test_queues.py` runs the same limits across real replicas.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from jobrunner.errors import InvalidArguments, JobNotFound
from jobrunner.records import CatalogEntry, Outcome, Policy, WorkerInfo
from jobrunner.store.leases import lock_name
from jobrunner.store.tables import job_locks, job_rates, job_runs
from jobrunner.waits import waiting_reason
from tests.support import AllPorts

PER_TENANT = Policy(overlap="allow", keyed=True, max_per_key=2)


def publish(store: AllPorts, name: str, **definition: Any) -> None:
    entry = CatalogEntry(
        name=name, cron=None, timezone="UTC", config_hash="h", definition=definition
    )
    store.publish_catalog([entry], worker_id="w")


def claim_all(
    store: AllPorts, policies: dict[str, Policy], worker: str = "w1", limit: int = 50
) -> list[int]:
    """Claim until a claim starts nothing more; the ids started."""
    started: list[int] = []
    for _ in range(20):
        got = store.claim(worker_id=worker, limit=limit, policies=policies, lease_ttl=30)
        if not got.started:
            return started
        started += [c.run.id for c in got.started]
    raise AssertionError("claims kept starting runs")


def test_a_run_takes_its_key_from_its_kwarg_or_the_enqueue(store: AllPorts) -> None:
    publish(store, "sync", concurrency_key="tenant", max_per_key=2)
    assert store.enqueue("sync", {"tenant": "t-7"}).concurrency_key == "t-7"
    assert store.enqueue("sync", {"tenant": 42}).concurrency_key == "42"
    given = store.enqueue("sync", {"tenant": "t-7"}, concurrency_key="override")
    assert given.concurrency_key == "override"
    assert store.get_run(given.id).concurrency_key == "override"
    ids = store.enqueue_many("sync", [{"tenant": "a"}, {"tenant": "b"}])
    assert [store.get_run(i).concurrency_key for i in ids] == ["a", "b"]


def test_an_enqueue_without_its_key_is_refused_and_writes_nothing(store: AllPorts) -> None:
    publish(store, "sync", concurrency_key="tenant", max_per_key=2)
    publish(store, "plain")
    with pytest.raises(InvalidArguments, match=r"kwarg .tenant.*concurrency_key"):
        store.enqueue("sync", {"other": 1})
    with pytest.raises(InvalidArguments, match="kwarg 'tenant'"):
        store.enqueue("sync", {"tenant": None})
    with pytest.raises(InvalidArguments, match=r"kwargs_list\[1\]: .*'tenant'"):
        store.enqueue_many("sync", [{"tenant": "a"}, {}, {"tenant": "c"}])
    with pytest.raises(InvalidArguments, match="'plain' has no concurrency_key"):
        store.enqueue("plain", {}, concurrency_key="x")
    with pytest.raises(InvalidArguments, match="1 to 200 characters"):
        store.enqueue("sync", {"tenant": "a"}, concurrency_key="")
    with pytest.raises(JobNotFound):
        store.enqueue("nope", {}, concurrency_key="x")
    assert store.list_runs() == []


def test_max_per_key_bounds_the_runs_of_each_key_value(store: AllPorts) -> None:
    """Two runs at most per tenant at once, whatever the backlog's order; the others
    start as those end; a key's backlog does not hold back another key's runs."""
    publish(store, "sync", concurrency_key="tenant", max_per_key=2)
    store.enqueue_many("sync", [{"tenant": "big"}] * 30)
    small = store.enqueue_many("sync", [{"tenant": "small"}] * 3)
    policies = {"sync": PER_TENANT}
    # A batch of 4 reads 4 runs of "big": 2 start, and the next claims pass over "big".
    first_claim = store.claim(worker_id="w1", limit=4, policies=policies, lease_ttl=30)
    assert len(first_claim.started) == 2 and first_claim.next_due == first_claim.now
    started = [c.run.id for c in first_claim.started] + claim_all(store, policies, limit=4)
    keys = Counter(store.get_run(i).concurrency_key for i in started)
    assert keys == {"big": 2, "small": 2}
    assert set(small[:2]) <= set(started)
    held = Counter(lock.concurrency_key for lock in store.list_locks())
    assert held == {"big": 2, "small": 2}
    # One run of "big" ends: exactly one more of "big" starts.
    first = store.get_run(started[0])
    lease = next(c for c in _claimed(store, first.id))
    store.finish("w1", [Outcome(lease=lease, status="succeeded")])
    again = claim_all(store, policies)
    assert [store.get_run(i).concurrency_key for i in again] == [first.concurrency_key]


def test_a_fence_and_a_takeover_are_per_key(store: AllPorts) -> None:
    """A run whose key lease expired is lost and its key's next run starts; the lease of
    another key value is untouched."""
    publish(store, "sync", concurrency_key="tenant", max_per_key=1)
    a, b = (store.enqueue("sync", {"tenant": t}).id for t in ("a", "b"))
    policies = {"sync": Policy(overlap="allow", keyed=True, max_per_key=1)}
    assert sorted(claim_all(store, policies, "dead")) == sorted([a, b])
    later = store.enqueue("sync", {"tenant": "a"}).id
    with store.engine.begin() as conn:
        conn.execute(
            job_locks.update()
            .where(job_locks.c.job_name == lock_name("sync", "a"))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert [r.id for r in store.reap(lease_ttl=30)] == [a]
    assert claim_all(store, policies, "w2") == [later]
    assert store.get_run(b).status == "running"
    fences = {lock.concurrency_key: lock.fence for lock in store.list_locks()}
    assert fences == {"a": 2, "b": 1}
    # the lease names of a keyed job: its own name and the key value
    assert {name for (name,) in _rows(store, sa.select(job_locks.c.job_name))} == {
        "sync\x1fa",
        "sync\x1fb",
    }


def test_a_rate_limit_holds_starts_in_a_window_and_says_when_it_reopens(
    store: AllPorts,
) -> None:
    publish(store, "mail", rate_limit="3/1h")
    ids = store.enqueue_many("mail", [{}] * 10)
    policies = {"mail": Policy(overlap="allow", rate=(3, 3600.0))}
    claim = store.claim(worker_id="w1", limit=50, policies=policies, lease_ttl=30)
    assert len(claim.started) == 3
    assert claim.next_due is not None and claim.now is not None
    assert timedelta(minutes=59) < claim.next_due - claim.now <= timedelta(hours=1)
    assert claim_all(store, policies, "w2") == []  # another replica: the window is shared
    blocked = store.rate_blocked_until("mail", "")
    assert blocked is not None and blocked > store.now() + timedelta(minutes=59)
    waiting = store.get_run(ids[-1])
    reason = waiting_reason(waiting, store.get_job("mail"), [], [], blocked, store.now())
    assert reason is not None and "no worker is alive" in reason
    worker = _live_worker(store)
    reason = waiting_reason(waiting, store.get_job("mail"), [worker], [], blocked, store.now())
    assert reason is not None and reason.startswith("rate limit 3/1h reached")


def test_a_rate_limit_per_key_counts_each_key_value_alone(store: AllPorts) -> None:
    publish(store, "mail", concurrency_key="tenant", rate_limit="2/1h")
    store.enqueue_many("mail", [{"tenant": "a"}] * 5 + [{"tenant": "b"}] * 5)
    policies = {"mail": Policy(overlap="allow", keyed=True, rate=(2, 3600.0))}
    started = claim_all(store, policies)
    assert Counter(store.get_run(i).concurrency_key for i in started) == {"a": 2, "b": 2}
    windows = {
        k: len(s)
        for k, s in _rows(store, sa.select(job_rates.c.concurrency_key, job_rates.c.starts))
    }
    assert windows == {"a": 2, "b": 2}


def test_runs_are_listed_by_queue_and_priority(store: AllPorts) -> None:
    publish(store, "light")
    publish(store, "heavy", queue="heavy")
    light = store.enqueue("light").id
    heavy = store.enqueue("heavy", priority=5).id
    assert [r.id for r in store.list_runs(queue="heavy")] == [heavy]
    assert [r.id for r in store.list_runs(queue="default")] == [light]
    assert [r.id for r in store.list_runs(priority=5)] == [heavy]
    assert store.list_runs(queue="nope") == []
    with pytest.raises(InvalidArguments, match="priority"):
        store.list_runs(priority=10**9)


def _rows(store: AllPorts, query: sa.Select[Any]) -> list[Any]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def _claimed(store: AllPorts, run_id: int) -> list[Any]:
    from jobrunner.records import Lease

    return [
        Lease(
            job_name=lock.job_name,
            key=lock.concurrency_key,
            slot=lock.slot,
            run_id=run_id,
            fence=lock.fence,
        )
        for lock in store.list_locks()
        if lock.run_id == run_id
    ]


def _live_worker(store: AllPorts) -> Any:
    store.register_worker(
        WorkerInfo(
            worker_id="w",
            hostname="h",
            pid=1,
            version="v",
            config_hash="c",
            jobs={"mail": "h"},
        )
    )
    return next(w for w in store.list_workers() if w.worker_id == "w")


def test_job_runs_key_column_is_what_the_claim_groups_by(store: AllPorts) -> None:
    publish(store, "sync", concurrency_key="tenant", max_per_key=1)
    store.enqueue("sync", {"tenant": "x"})
    assert _rows(store, sa.select(job_runs.c.concurrency_key)) == [("x",)]


def test_housekeeping_counts_due_runs_by_queue_and_priority_and_finds_unserved_queues(
    store: AllPorts,
) -> None:
    publish(store, "light")
    publish(store, "heavy", queue="heavy")
    store.enqueue_many("light", [{}] * 3)
    store.enqueue("light", priority=-3)
    store.enqueue_many("heavy", [{}] * 2, priority=5)
    store.enqueue("heavy", run_at=datetime.now(UTC) + timedelta(hours=1))  # not due
    beat = store.heartbeat("w", 30, housekeeping=True)
    assert beat.queue_depth == {
        ("default", "0"): 3,
        ("default", "below 0"): 1,
        ("heavy", "above 0"): 2,
    }
    assert beat.unserved == {"default": ["light"], "heavy": ["heavy"]}  # no live worker
    _live_worker(store)  # defines "mail" only, serves every queue
    store.register_worker(
        WorkerInfo(
            worker_id="w2", hostname="h", pid=2, version="v", config_hash="c",
            jobs={"light": "h", "heavy": "h"}, queues=["default"],
        )
    )  # fmt: skip
    beat = store.heartbeat("w", 30, housekeeping=True)
    assert beat.unserved == {"heavy": ["heavy"]}
