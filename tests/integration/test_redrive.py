"""Re-drive: a run that ended without success is queued again, linked to the run it retries
(SQLite and PostgreSQL); the router's POST /runs/{id}/retry."""

from __future__ import annotations

from typing import Any

import pytest

from jobrunner.errors import RunNotFound, RunNotRetryable
from jobrunner.records import CatalogEntry, Outcome, Policy
from tests.support import AllPorts

ALLOW = {"j": Policy(overlap="allow")}


def publish(store: AllPorts, **definition: Any) -> None:
    entry = CatalogEntry(
        name="j", cron=None, timezone="UTC", config_hash="h", definition=definition
    )
    store.publish_catalog([entry], worker_id="w")


def run_to(store: AllPorts, status: str, **enqueue: Any) -> int:
    run = store.enqueue("j", {"n": 1}, **enqueue)
    claimed = store.claim(worker_id="w", limit=10, policies=ALLOW, lease_ttl=30).started
    lease = next(c.lease for c in claimed if c.run.id == run.id)
    store.finish("w", [Outcome(lease=lease, status=status)])  # type: ignore[arg-type]
    return run.id


def test_a_failed_run_is_queued_again_as_a_linked_attempt(store: AllPorts) -> None:
    publish(store, retries=2)
    failed = run_to(store, "failed", priority=4, correlation_id="req-1")
    again = store.retry_run(failed)
    assert (again.status, again.trigger, again.retry_of, again.attempt) == (
        "queued",
        "retry",
        failed,
        2,
    )
    assert (again.kwargs, again.priority, again.correlation_id) == ({"n": 1}, 4, "req-1")
    assert again.max_attempts == 2 + 2  # the job's retries from here
    assert again.reason == "retried by request"
    assert [a.id for a in store.run_attempts(failed)] == [failed, again.id]
    with pytest.raises(
        RunNotRetryable, match=f"newest attempt \\(run {again.id}\\) is still queued"
    ):
        store.retry_run(failed)  # its retry is queued: nothing more is written
    assert len(store.list_runs()) == 2


def test_only_runs_that_ended_without_success_can_be_retried(store: AllPorts) -> None:
    publish(store)
    ok = run_to(store, "succeeded")
    with pytest.raises(RunNotRetryable, match="ended succeeded"):
        store.retry_run(ok)
    with pytest.raises(RunNotFound):
        store.retry_run(10**6)
    cancelled = store.cancel_run(store.enqueue("j").id)
    assert store.retry_run(cancelled.id).retry_of == cancelled.id


def test_enqueue_many_with_idempotency_keys_returns_the_first_runs_on_repeats(
    store: AllPorts,
) -> None:
    from jobrunner.errors import InvalidArguments

    publish(store)
    first = store.enqueue_many(
        "j", [{"n": 1}, {"n": 2}, {"n": 3}], idempotency_keys=["a", None, "c"]
    )
    again = store.enqueue_many("j", [{"n": 9}, {"n": 9}], idempotency_keys=["c", "a"])
    assert again == [first[2], first[0]]
    assert store.get_run(first[2]).kwargs == {"n": 3}  # the first run, unchanged
    assert len(store.list_runs()) == 3
    for keys, said in (
        (["a"], r"one key \(or None\) per element"),
        (["", "b"], r"idempotency_keys\[0\]"),
    ):
        with pytest.raises(InvalidArguments, match=said):
            store.enqueue_many("j", [{}, {}], idempotency_keys=keys)
    with pytest.raises(InvalidArguments, match=r"kwargs_list\[1\]"):
        store.enqueue_many("j", [{}, {"x": float("nan")}], idempotency_keys=["new", "newer"])
    assert len(store.list_runs()) == 3  # all or none


def test_unique_for_returns_the_run_with_equal_kwargs_within_the_window(store: AllPorts) -> None:
    import sqlalchemy as sa

    from jobrunner.store.access import ClientStore
    from jobrunner.store.tables import job_runs

    publish(store, unique_for=600.0)
    client = ClientStore(store.engine)  # a client knows unique_for from the catalog
    first = client.enqueue("j", {"a": 1, "b": [2]})
    assert client.enqueue("j", {"b": [2], "a": 1}).id == first.id  # equal kwargs, any order
    other = client.enqueue("j", {"a": 2})
    assert other.id != first.id
    assert client.enqueue_many("j", [{"a": 1, "b": [2]}, {"a": 3}])[0] == first.id
    with store.engine.begin() as conn:  # the first run was enqueued 11 minutes ago
        conn.execute(
            job_runs.update()
            .where(job_runs.c.id == first.id)
            .values(
                enqueued_at=sa.func.datetime("now", "-11 minutes")
                if store.dialect == "sqlite"
                else sa.text("now() - interval '11 minutes'")
            )
        )
    later = client.enqueue("j", {"a": 1, "b": [2]})
    assert later.id != first.id
    assert client.enqueue("j", {"a": 1, "b": [2]}, idempotency_key="k").id not in (
        first.id,
        later.id,
    )
    assert len(store.list_runs()) == 5


@pytest.mark.parametrize("db_url", ["postgresql", "sqlite"], indirect=True)
def test_equal_enqueues_racing_within_the_window_make_one_run(db_url: str) -> None:
    import threading

    from jobrunner.store.access import ClientStore

    store = AllPorts.from_url(db_url)
    try:
        publish(store, unique_for=600.0)
        clients = [ClientStore.from_url(db_url) for _ in range(6)]
        barrier = threading.Barrier(len(clients))
        ids: list[int] = []

        def enqueue(client: ClientStore) -> None:
            barrier.wait()
            for _ in range(5):
                ids.append(client.enqueue("j", {"same": True}).id)

        threads = [threading.Thread(target=enqueue, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in clients:
            c.close()
        assert len(ids) == 30 and len(set(ids)) == 1, sorted(set(ids))
        assert len(store.list_runs()) == 1
    finally:
        store.close()
