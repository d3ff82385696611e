"""AllPorts conformance suite: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql

from jobrunner.errors import InvalidArguments, JobNotFound, RunNotFound, SchemaOutOfDate
from jobrunner.records import CatalogEntry, Outcome, Policy, Slot, WorkerInfo
from jobrunner.store import history, migrate
from jobrunner.store import outcomes as outcomes_op
from jobrunner.store.access import write
from jobrunner.store.engine import IDLE_IN_TRANSACTION, create_engine
from jobrunner.store.sql import Op
from jobrunner.store.tables import PgArray, job_locks, job_runs, jobrunner_workers, metadata
from tests.support import AllPorts

FORBID = Policy(overlap="forbid", misfire_grace=3600)
ALLOW = Policy(overlap="allow", misfire_grace=3600)


def publish(store: AllPorts, *names: str, retries: int = 0) -> None:
    store.publish_catalog(
        [
            CatalogEntry(
                name=n,
                cron="* * * * *",
                timezone="UTC",
                config_hash="h",
                definition={"retries": retries},
            )
            for n in names
        ],
        worker_id="w",
    )


def slot(job: str, at: datetime, **kw: object) -> Slot:
    return Slot(job_name=job, scheduled_for=at, run_at=at, **kw)  # type: ignore[arg-type]


def past(seconds: float = 5) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


def test_migrated_schema_equals_metadata(store: AllPorts) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE})
        diff = compare_metadata(ctx, metadata)
    assert diff == []
    assert migrate.status(store.engine).up_to_date


def _schema(engine: sa.Engine) -> dict[str, Any]:
    """Everything sa.inspect sees of a database's tables, in comparable form."""
    insp = sa.inspect(engine)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        out[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in insp.get_columns(table)
            ],
            "pk": insp.get_pk_constraint(table),
            "indexes": sorted(
                (
                    i["name"] or "",
                    tuple(i["column_names"]),
                    bool(i["unique"]),
                    sorted((k, str(v)) for k, v in i.get("dialect_options", {}).items()),
                )
                for i in insp.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"] or "", tuple(u["column_names"]))
                for u in insp.get_unique_constraints(table)
            ),
            "checks": sorted(
                (c["name"] or "", c["sqltext"]) for c in insp.get_check_constraints(table)
            ),
        }
    return out


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_schema_run_creates_is_the_migrated_schema(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """`jobrunner run` creates an empty database's schema from the table definitions (no
    Alembic in the replica); it must be exactly what the migrations build."""
    if backend == "sqlite":
        created, migrated = (f"sqlite:///{tmp_path / n}.db" for n in ("created", "migrated"))
    else:
        created = request.getfixturevalue("empty_pg_url")
        migrated = request.getfixturevalue("pg_url")
    engines = [AllPorts.from_url(created).engine, AllPorts.from_url(migrated).engine]
    try:
        assert migrate.init_if_empty(engines[0]).up_to_date
        migrate.upgrade(engines[1])
        assert _schema(engines[0]) == _schema(engines[1])
        assert migrate.status(engines[0]).current == migrate.HEAD
        assert migrate.upgrade(engines[0]).up_to_date  # Alembic accepts the stamp
    finally:
        for engine in engines:
            engine.dispose()


def test_head_constant_matches_the_migration_scripts() -> None:
    assert migrate.alembic_head() == migrate.HEAD


def test_schema_behind_is_refused_and_names_db_upgrade(store: AllPorts) -> None:
    with store.engine.begin() as conn:  # a real 0001 schema, through the migrations' downgrades
        command.downgrade(migrate._alembic_config(conn), "0001")
    with pytest.raises(SchemaOutOfDate, match="jobrunner db upgrade"):
        migrate.init_if_empty(store.engine)
    assert migrate.status(store.engine).current == "0001"  # `run` never changes it
    assert migrate.upgrade(store.engine).up_to_date


def test_upgrade_to_partial_unique_keys_keeps_rows_and_constraints(store: AllPorts) -> None:
    """Migration 0005 (rebuilds the table on SQLite): rows survive, the slot key and the
    idempotency key still refuse a second row, and the downgrade restores the constraints."""
    publish(store, "a")
    at = past(30)
    with store.engine.begin() as conn:
        command.downgrade(migrate._alembic_config(conn), "0004")
        for slot_at, key in ((at, None), (None, "k")):  # rows as 0004's code wrote them
            conn.execute(
                job_runs.insert().values(
                    job_name="a", trigger="schedule" if slot_at else "manual",
                    scheduled_for=slot_at, run_at=at, status="queued", attempt=1,
                    max_attempts=1, kwargs={}, enqueued_at=at, idempotency_key=key,
                )  # no priority: the column is not there yet
            )  # fmt: skip
    assert migrate.upgrade(store.engine).up_to_date
    assert store.insert_slots([slot("a", at)]) == 0
    keyed = store.enqueue("a", {"n": 2}, idempotency_key="k")
    assert (keyed.kwargs, keyed.priority) == ({}, 0)  # the first row's, migrated
    assert store.enqueue("a").id != store.enqueue("a").id  # no key: no conflict
    with store.engine.begin() as conn:
        command.downgrade(migrate._alembic_config(conn), "0004")
        assert conn.execute(sa.select(sa.func.count()).select_from(job_runs)).scalar() == 4
    assert migrate.upgrade(store.engine).up_to_date


def test_postgres_ends_a_transaction_left_idle_and_keeps_the_urls_options(pg_url: str) -> None:
    """A client cut off mid-transaction must not keep its row locks (peers skip locked rows:
    an expired lease could not be taken over), so jobrunner's connections set
    idle_in_transaction_session_timeout; options given in the URL are kept."""
    given = sa.make_url(pg_url).update_query_dict({"options": "-c statement_timeout=7000"})
    for url in (pg_url, given.render_as_string(hide_password=False)):
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                show = conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar()
                assert show == f"{int(IDLE_IN_TRANSACTION)}s"
                if url != pg_url:
                    assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "7s"
        finally:
            engine.dispose()


def test_schema_from_a_newer_jobrunner_is_refused_as_such(store: AllPorts) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(SchemaOutOfDate, match="newer jobrunner"):
        migrate.init_if_empty(store.engine)


def test_init_if_empty_races_safely(empty_pg_url: str) -> None:
    errors: list[BaseException] = []

    def init() -> None:
        s = AllPorts.from_url(empty_pg_url)
        try:
            migrate.init_if_empty(s.engine)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=init) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = AllPorts.from_url(empty_pg_url)
    assert migrate.status(s.engine).up_to_date
    s.close()


def test_timestamps_are_aware_utc(store: AllPorts) -> None:
    publish(store, "a")
    run = store.enqueue("a", {"x": 1})
    assert run.enqueued_at.tzinfo is not None and run.enqueued_at.utcoffset() == timedelta(0)
    assert abs((store.now() - datetime.now(UTC)).total_seconds()) < 5
    assert store.get_run(run.id).run_at.tzinfo is not None


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        ("varchar", ["a", 'q"uote', "back\\slash", "", "NULL", "sp ace", "{x,y}", "é", None]),
        ("varchar", ["job-1", "job.2:x"]),
        ("varchar", []),
        ("bigint", [1, None, -3, 2**62]),
        ("integer", [0, 7]),
        ("timestamptz", [datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=UTC), None]),
    ],
)
@pytest.mark.parametrize("server", ["pg_url", "pgbouncer_url"])
def test_array_parameters_arrive_as_given(
    request: pytest.FixtureRequest, server: str, kind: str, values: list[Any]
) -> None:
    """`PgArray` (PostgreSQL only; SQLite takes lists as an expanding IN) writes array
    literals itself: quoting, escapes, NULL and empty arrays survive."""
    engine = AllPorts.from_url(request.getfixturevalue(server)).engine
    with engine.connect() as conn:
        got = conn.execute(sa.select(sa.bindparam("v", type_=PgArray(kind))), {"v": values})
        assert got.scalar() == values
    engine.dispose()


def test_array_parameter_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        PgArray("timestamptz").process_bind_param([datetime(2026, 1, 1)], postgresql.dialect())
    with pytest.raises(ValueError, match="array kind"):
        PgArray("json")


def test_claims_with_thousands_of_jobs(store: AllPorts) -> None:
    """Job names go to the database as one array: every job among 3,000 is claimable."""
    names = [f"job-{i}" for i in range(3000)]
    store.insert_slots([slot(n, past()) for n in names])
    policies = dict.fromkeys(names, FORBID)
    started = store.claim(worker_id="w1", limit=5000, policies=policies, lease_ttl=30).started
    assert sorted(c.run.job_name for c in started) == sorted(names)


def test_insert_slots_is_idempotent_under_concurrency(store: AllPorts) -> None:
    at = [past(60 - i) for i in range(20)]
    counts: list[int] = []

    def insert() -> None:
        counts.append(store.insert_slots([slot("a", t) for t in at]))

    threads = [threading.Thread(target=insert) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 20
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(job_runs)).scalar() == 20


def test_claimed_runs_are_recorded_running_under_their_lease(store: AllPorts) -> None:
    """The claim's start (on PostgreSQL in the lease insert's statement, on SQLite its own)
    records each run `running` on this worker with its lease's fence and a start time;
    runs left out stay queued."""
    publish(store, "q", "forbidden")
    ids = [store.enqueue("q").id for _ in range(3)]
    left = store.enqueue("forbidden").id
    claim = store.claim(
        worker_id="w1", limit=10, policies={"q": Policy(overlap="allow")}, lease_ttl=30
    )
    assert sorted(c.run.id for c in claim.started) == sorted(ids)
    for c in claim.started:
        row = store.get_run(c.run.id)
        assert (row.status, row.worker_id, row.fence) == ("running", "w1", c.lease.fence)
        assert row.started_at is not None and claim.now is not None
        assert abs((row.started_at - claim.now).total_seconds()) < 1
    assert store.get_run(left).status == "queued"


def future(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_claim_ahead_takes_runs_due_soon_and_starts_them_at_their_time(store: AllPorts) -> None:
    """A run due within `ahead` is claimed now and recorded running from its `run_at`; one
    due later is not touched, and `next_due` is when to claim it (`ahead` before it)."""
    soon, later = future(20), future(300)
    store.insert_slots([slot("a", soon), slot("b", later)])
    pol = {"a": FORBID, "b": FORBID}
    plain = store.claim(worker_id="w", limit=5, policies=pol, lease_ttl=30)
    assert plain.started == [] and plain.next_due == soon
    claim = store.claim(worker_id="w", limit=5, policies=pol, lease_ttl=30, ahead=60)
    assert [c.run.job_name for c in claim.started] == ["a"] and claim.skipped == []
    row = store.get_run(claim.started[0].run.id)
    assert (row.status, row.started_at) == ("running", soon)
    assert claim.next_due == later - timedelta(seconds=60)
    assert store.slot_runs("b", later, later)[0].status == "queued"


def test_claim_ahead_leaves_decisions_to_the_due_time(store: AllPorts) -> None:
    """A run not due yet whose job has no free lease slot, or that is a paused slot, is
    neither skipped nor replaced ahead of time: it stays queued, and `next_due` is its time,
    so that a claim then decides (the holder may have finished by then)."""
    publish(store, "busy", "swap", "off")
    store.set_paused("off", True)
    store.insert_slots([slot("busy", past(10)), slot("swap", past(10))])
    pol = {
        "busy": FORBID,
        "swap": Policy(overlap="replace", misfire_grace=3600),
        "off": FORBID,
    }
    holders = store.claim(worker_id="w1", limit=5, policies=pol, lease_ttl=30)
    assert len(holders.started) == 2
    due = future(1.0)
    store.insert_slots([slot("busy", due), slot("swap", due), slot("off", due)])
    claim = store.claim(worker_id="w2", limit=5, policies=pol, lease_ttl=30, ahead=60)
    assert claim.started == [] and claim.skipped == [] and claim.replaced == []
    assert claim.next_due == due
    for job in ("busy", "swap", "off"):
        assert store.slot_runs(job, due, due)[0].status == "queued"
    # Once the holder's outcome is written, the next claim ahead takes the slot.
    busy = next(c for c in holders.started if c.run.job_name == "busy")
    store.finish("w1", [Outcome(lease=busy.lease, status="succeeded")])
    after = store.claim(worker_id="w2", limit=5, policies=pol, lease_ttl=30, ahead=60)
    assert [c.run.job_name for c in after.started] == ["busy"]
    # At the due time a claim decides the others: the paused slot is skipped, the replace
    # slot takes its holder's lease.
    time.sleep(max((due - datetime.now(UTC)).total_seconds(), 0) + 0.05)
    then = store.claim(worker_id="w2", limit=5, policies=pol, lease_ttl=30, ahead=60)
    assert [(r.job_name, why) for r, why in then.skipped] == [("off", "paused")]
    swap = next(c for c in holders.started if c.run.job_name == "swap")
    assert [c.run.job_name for c in then.started] == ["swap"] and then.replaced == [swap.run.id]


def test_results_of_every_json_kind_are_written_in_one_finish(store: AllPorts) -> None:
    """Successes with results (JSON text, one statement on PostgreSQL), a plain success and
    a success whose result was not kept, finished together, each read back as given."""
    values: list[Any] = [42, "42", 1.5, True, [1, None, "x"], {"a": {"b": []}}, "", None]
    at = past()
    store.insert_slots([slot("r", at - timedelta(seconds=i)) for i in range(len(values) + 1)])
    claim = store.claim(worker_id="w", limit=20, policies={"r": ALLOW}, lease_ttl=30)
    leases = [c.lease for c in claim.started]
    assert len(leases) == len(values) + 1
    outcomes = [
        Outcome(lease=lease, status="succeeded", result=None if v is None else json.dumps(v))
        for lease, v in zip(leases, values, strict=False)
    ]
    outcomes.append(Outcome(lease=leases[-1], status="succeeded", result_note="not kept: big"))
    assert store.finish("w", outcomes) == {lease.run_id for lease in leases}
    got = [store.get_run(lease.run_id) for lease in leases]
    assert {r.status for r in got} == {"succeeded"}
    assert [r.result for r in got] == [*values, None]
    assert [r.result_note for r in got] == [None] * len(values) + ["not kept: big"]


def _steps(op: Op[Any], seen: list[Any]) -> Op[Any]:
    """`op`, with each statement it yields recorded in `seen`."""
    step = next(op)
    while True:
        seen.append(step)
        try:
            step = op.send((yield step))
        except StopIteration as done:
            return done.value


@pytest.mark.parametrize("with_results", [0, 2])
def test_finish_updates_each_success_once(store: AllPorts, with_results: int) -> None:
    """Plain successes are one UPDATE by id and successes with results one UPDATE of theirs:
    no row is written twice (the release, then one statement per kind present)."""
    at = past()
    store.insert_slots([slot("r", at - timedelta(seconds=i)) for i in range(4)])
    claim = store.claim(worker_id="w", limit=4, policies={"r": ALLOW}, lease_ttl=30)
    outcomes = [
        Outcome(lease=c.lease, status="succeeded", result="7" if i < with_results else None)
        for i, c in enumerate(claim.started)
    ]
    seen: list[Any] = []
    op = _steps(outcomes_op.finish(store.dialect, "w", outcomes), seen)
    assert write(store.engine, op) == {c.run.id for c in claim.started}
    assert len(seen) == (3 if with_results else 2)
    got = [store.get_run(c.run.id) for c in claim.started]
    assert [r.result for r in got] == [7] * with_results + [None] * (4 - with_results)


def test_a_run_cancelled_before_its_time_is_recorded_as_never_begun(store: AllPorts) -> None:
    """A run claimed ahead and cancelled (shutdown, cancel, lost lease) before its `run_at`
    does not keep a start after its finish."""
    store.insert_slots([slot("a", future(30))])
    (claimed,) = store.claim(
        worker_id="w", limit=5, policies={"a": FORBID}, lease_ttl=30, ahead=60
    ).started
    outcome = Outcome(lease=claimed.lease, status="cancelled", reason="shutdown")
    assert store.finish("w", [outcome]) == {claimed.run.id}
    row = store.get_run(claimed.run.id)
    assert row.status == "cancelled" and row.started_at is not None
    assert row.finished_at is not None and row.started_at == row.finished_at


def test_a_run_due_soon_that_a_peer_holds_is_still_a_wake_up_time(pg_url: str) -> None:
    """Replicas claim ahead together: a run due within `ahead` that a peer's claim has locked
    (SKIP LOCKED leaves it out) stays this claimer's next wake-up, at its own time, so that
    a claim then decides it should the peer not (draining, at capacity, failing)."""
    store = AllPorts.from_url(pg_url)
    try:
        due = future(20)
        store.insert_slots([slot("a", due), slot("b", future(300))])
        peer = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with peer.begin() as conn:
                conn.execute(
                    sa.select(job_runs.c.id).where(job_runs.c.job_name == "a").with_for_update()
                )
                pol = {"a": FORBID, "b": FORBID}
                claim = store.claim(worker_id="w", limit=5, policies=pol, lease_ttl=30, ahead=60)
                assert claim.started == [] and claim.next_due == due
        finally:
            peer.dispose()
    finally:
        store.close()


def test_concurrent_claimers_never_get_the_same_run(store: AllPorts) -> None:
    publish(store, "q")
    for i in range(200):
        store.enqueue("q", {"i": i})
    policies = {"q": Policy(overlap="allow")}
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        while True:
            claim = store.claim(worker_id=f"w{n}", limit=7, policies=policies, lease_ttl=30)
            if not claim.started:
                return
            with lock:
                claimed.extend(c.run.id for c in claim.started)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 200
    assert len(set(claimed)) == 200


def test_forbid_skips_a_slot_while_the_previous_holds_the_lease(store: AllPorts) -> None:
    store.insert_slots([slot("a", past(20)), slot("a", past(10))])
    first = store.claim(worker_id="w1", limit=1, policies={"a": FORBID}, lease_ttl=30)
    assert len(first.started) == 1
    second = store.claim(worker_id="w2", limit=5, policies={"a": FORBID}, lease_ttl=30)
    assert second.started == []
    assert [(r.id, why) for r, why in second.skipped] == [(first.started[0].run.id + 1, "overlap")]


def test_catch_up_slots_wait_for_the_lease_instead_of_skipping(store: AllPorts) -> None:
    store.insert_slots([slot("a", past(30 - i), reason="catch-up") for i in range(3)])
    first = store.claim(worker_id="w", limit=5, policies={"a": FORBID}, lease_ttl=30)
    assert len(first.started) == 1 and first.skipped == [] and first.waiting == 2
    again = store.claim(worker_id="w", limit=5, policies={"a": FORBID}, lease_ttl=30)
    assert again.started == [] and again.skipped == []  # the holder still runs: they wait
    store.finish("w", [Outcome(lease=first.started[0].lease, status="succeeded")])
    after = store.claim(worker_id="w", limit=5, policies={"a": FORBID}, lease_ttl=30)
    assert len(after.started) == 1 and after.started[0].run.reason == "catch-up"


def test_allow_respects_max_concurrency(store: AllPorts) -> None:
    store.insert_slots([slot("a", past(30 - i)) for i in range(5)])
    pol = {"a": Policy(overlap="allow", max_concurrency=2, misfire_grace=3600)}
    claim = store.claim(worker_id="w", limit=10, policies=pol, lease_ttl=30)
    assert len(claim.started) == 2
    assert {c.lease.slot for c in claim.started} == {0, 1}
    assert claim.skipped == [] and claim.waiting == 3  # slots of one batch run in turn
    again = store.claim(worker_id="w", limit=10, policies=pol, lease_ttl=30)
    assert again.started == [] and len(again.skipped) == 3  # the two still hold the leases
    assert {why for _, why in again.skipped} == {"overlap"}


def test_replace_takes_the_lease_and_cancels_the_old_run(store: AllPorts) -> None:
    pol = {"a": Policy(overlap="replace", misfire_grace=3600)}
    store.insert_slots([slot("a", past(20))])
    old = store.claim(worker_id="w1", limit=1, policies=pol, lease_ttl=30).started[0]
    store.insert_slots([slot("a", past(10))])
    new = store.claim(worker_id="w2", limit=1, policies=pol, lease_ttl=30)
    assert len(new.started) == 1 and new.replaced == [old.run.id]
    assert new.started[0].lease.fence > old.lease.fence
    assert store.get_run(old.run.id).status == "cancelled"
    assert store.finish("w1", [Outcome(lease=old.lease, status="succeeded")]) == set()


def test_manual_runs_wait_for_capacity_instead_of_skipping(store: AllPorts) -> None:
    publish(store, "a")
    r1, r2 = store.enqueue("a"), store.enqueue("a")
    c1 = store.claim(worker_id="w", limit=5, policies={"a": FORBID}, lease_ttl=30)
    assert [c.run.id for c in c1.started] == [r1.id]
    assert store.get_run(r2.id).status == "queued"
    store.finish("w", [Outcome(lease=c1.started[0].lease, status="succeeded")])
    c2 = store.claim(worker_id="w", limit=5, policies={"a": FORBID}, lease_ttl=30)
    assert [c.run.id for c in c2.started] == [r2.id]


def test_misfired_and_paused_slots_are_skipped_with_reason(store: AllPorts) -> None:
    publish(store, "late", "off")
    store.set_paused("off", True)
    store.insert_slots([slot("late", past(600)), slot("off", past(1))])
    pol = {"late": Policy(misfire_grace=60), "off": FORBID}
    claim = store.claim(worker_id="w", limit=5, policies=pol, lease_ttl=30)
    assert claim.started == []
    assert sorted(why for _, why in claim.skipped) == ["misfired", "paused"]


def test_expired_lease_is_taken_over_with_higher_fence_and_stale_write_refused(
    store: AllPorts,
) -> None:
    publish(store, "a", retries=2)
    store.enqueue("a")
    stale = store.claim(worker_id="dead", limit=1, policies={"a": FORBID}, lease_ttl=0.2)
    lease = stale.started[0].lease
    assert store.reap(lease_ttl=30) == []  # not expired yet
    with store.engine.begin() as conn:  # the holder stopped renewing long ago
        conn.execute(job_locks.update().values(expires_at=past(60)))
    lost = store.reap(lease_ttl=30)
    assert [r.id for r in lost] == [lease.run_id]
    assert store.get_run(lease.run_id).status == "lost"
    retry = store.claim(worker_id="peer", limit=1, policies={"a": FORBID}, lease_ttl=30)
    assert retry.started[0].run.attempt == 2
    assert retry.started[0].lease.fence > lease.fence
    assert store.finish("dead", [Outcome(lease=lease, status="succeeded")]) == set()
    assert store.get_run(lease.run_id).status == "lost"
    assert store.renew("dead", 30).held == frozenset()


def test_reapers_racing_record_one_loss_and_one_retry(store: AllPorts) -> None:
    publish(store, "a", retries=1)
    store.enqueue("a")
    store.claim(worker_id="dead", limit=1, policies={"a": FORBID}, lease_ttl=30)
    with store.engine.begin() as conn:
        conn.execute(job_locks.update().values(expires_at=past(60)))
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(len(store.reap(lease_ttl=30))))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 1
    assert [r.attempt for r in store.list_runs(job="a")] == [2, 1]


def test_outcome_with_retry_queues_next_attempt_after_backoff(store: AllPorts) -> None:
    publish(store, "a", retries=1)
    store.enqueue("a", {"k": "v"})
    c = store.claim(worker_id="w", limit=1, policies={"a": FORBID}, lease_ttl=30).started[0]
    err = {"type": "ValueError", "message": "boom", "traceback": "..."}
    written = store.finish("w", [Outcome(lease=c.lease, status="failed", error=err, retry_in=3600)])
    assert written == {c.run.id}
    failed = store.get_run(c.run.id)
    assert failed.status == "failed" and failed.error == err and failed.finished_at is not None
    retry = store.list_runs(job="a", status="queued")[0]
    assert retry.attempt == 2 and retry.kwargs == {"k": "v"} and retry.retry_of == c.run.id
    assert retry.run_at > datetime.now(UTC) + timedelta(minutes=50)


def test_renew_extends_leases_and_reports_cancel_requests(store: AllPorts) -> None:
    publish(store, "a")
    info = WorkerInfo(worker_id="w", hostname="h", pid=1, version="0", config_hash="c", jobs={})
    store.register_worker(info)
    store.enqueue("a")
    c = store.claim(worker_id="w", limit=1, policies={"a": FORBID}, lease_ttl=1).started[0]
    renewal = store.renew("w", 60)
    assert renewal.held == {c.run.id} and renewal.registered
    assert store.list_locks()[0].expires_at > datetime.now(UTC) + timedelta(seconds=50)
    store.cancel_run(c.run.id)
    assert store.renew("w", 60).cancel_requested == {c.run.id}
    store.deregister_worker("w")
    assert store.list_locks() == [] and store.list_workers() == []


def test_enqueue_validates_and_is_idempotent(store: AllPorts) -> None:
    publish(store, "a")
    with pytest.raises(JobNotFound):
        store.enqueue("nope")
    with pytest.raises(InvalidArguments):
        store.enqueue("a", {"x": object()})
    with pytest.raises(InvalidArguments):
        store.enqueue("a", ["not", "a", "mapping"])  # type: ignore[arg-type]
    first = store.enqueue("a", {"n": 1}, idempotency_key="k1")
    again = store.enqueue("a", {"n": 2}, idempotency_key="k1")
    assert again.id == first.id and again.kwargs == {"n": 1}
    assert store.enqueue("a", idempotency_key="k2").id != first.id
    with pytest.raises(RunNotFound):
        store.get_run(999999)


def test_a_higher_priority_run_is_claimed_before_an_older_backlog(store: AllPorts) -> None:
    """Claims take the highest priority first, then the oldest; an enqueue's priority
    overrides the job's (from the catalog), retries and slots keep theirs."""
    publish(store, "a", retries=1)
    store.publish_catalog(
        [CatalogEntry(name="urgent", cron=None, timezone="UTC", config_hash="h",
                      definition={"priority": 5})],
        "w0",
    )  # fmt: skip
    backlog = store.enqueue_many("a", [{"n": i} for i in range(50)])
    job_default = store.enqueue("urgent")
    overriding = store.enqueue("a", {"n": "vip"}, priority=9)
    low = store.enqueue("urgent", priority=-1)
    assert (job_default.priority, overriding.priority, low.priority) == (5, 9, -1)
    assert store.get_run(backlog[0]).priority == 0
    pol = {"a": Policy(overlap="allow"), "urgent": Policy(overlap="allow")}
    first = store.claim(worker_id="w", limit=3, policies=pol, lease_ttl=30).started
    assert [c.run.id for c in first] == [overriding.id, job_default.id, backlog[0]]
    store.finish("w", [Outcome(lease=first[0].lease, status="failed", retry_in=0.0)])
    (retry,) = [r for r in store.run_attempts(overriding.id) if r.attempt == 2]
    assert retry.priority == 9  # a retry keeps its priority
    again = store.claim(worker_id="w", limit=1, policies=pol, lease_ttl=30).started
    assert [c.run.id for c in again] == [retry.id]
    store.insert_slots([slot("a", past(1), priority=3)])
    (scheduled,) = store.claim(worker_id="w", limit=1, policies=pol, lease_ttl=30).started
    assert (scheduled.run.trigger, scheduled.run.priority) == ("schedule", 3)
    rest = store.claim(worker_id="w", limit=100, policies=pol, lease_ttl=30).started
    assert [c.run.id for c in rest][-1] == low.id  # below the default 0


@pytest.mark.parametrize("bad", [True, 1.5, "1", 1_000_001, -1_000_001])
def test_an_invalid_priority_is_refused_and_nothing_written(store: AllPorts, bad: Any) -> None:
    publish(store, "a")
    with pytest.raises(InvalidArguments, match="priority must be an integer from -1,000,000"):
        store.enqueue("a", priority=bad)
    with pytest.raises(InvalidArguments, match="priority must be an integer"):
        store.enqueue_many("a", [{}], priority=bad)
    assert store.list_runs() == []


def test_cancel_queued_run_is_immediate(store: AllPorts) -> None:
    publish(store, "a")
    run = store.enqueue("a")
    assert store.cancel_run(run.id).status == "cancelled"
    assert store.claim(worker_id="w", limit=5, policies={"a": FORBID}, lease_ttl=30).started == []


def test_prune_keeps_recent_and_keep_last(store: AllPorts) -> None:
    store.insert_slots(
        [slot("a", past(3600 * 24 * 40 + i), status="skipped", reason="x") for i in range(5)]
    )
    with store.engine.begin() as conn:
        old = past(3600 * 24 * 40)  # a run finished then was enqueued before
        conn.execute(job_runs.update().values(enqueued_at=old, finished_at=old))
    assert store.prune(older_than=timedelta(days=30), keep_last=2) == 3
    assert len(store.list_runs(job="a")) == 2
    assert store.prune(older_than=timedelta(days=30)) == 2


def test_prune_goes_chunk_by_chunk_oldest_first_and_keeps_the_rest(
    store: AllPorts, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.insert_slots(
        [slot("a", past(3600 * i), status="skipped", reason="x") for i in range(1, 12)]
    )
    runs = store.list_runs(limit=100)
    with store.engine.begin() as conn:  # run i was enqueued and finished i days ago
        for run in runs:
            age = past(3600 * 24 * (run.id % 12) - 3600)  # less an hour
            conn.execute(
                job_runs.update()
                .where(job_runs.c.id == run.id)
                .values(enqueued_at=age, finished_at=age)
            )
    first, since = write(
        store.engine, history.prune(store.dialect, older_than=timedelta(days=4), limit=3)
    )
    assert first == 3
    assert since is not None and (store.now() - since).days == 8  # the newest of 11, 10, 9
    monkeypatch.setattr(history, "PRUNE_CHUNK", 2)  # the rest in chunks of 2
    assert store.prune(older_than=timedelta(days=4)) == 4  # 11 runs, aged 1..11 days: 7 older
    left = sorted((store.now() - r.enqueued_at).days for r in store.list_runs(limit=100))
    assert left == [0, 1, 2, 3]


def test_heartbeat_housekeeping_forgets_long_dead_workers(store: AllPorts) -> None:
    for wid in ("dead", "me"):
        store.register_worker(
            WorkerInfo(worker_id=wid, hostname="h", pid=1, version="0", config_hash="c", jobs={})
        )
    with store.engine.begin() as conn:
        conn.execute(
            jobrunner_workers.update()
            .where(jobrunner_workers.c.worker_id == "dead")
            .values(last_seen=past(7200))
        )
    store.heartbeat("me", 30, housekeeping=False)
    assert {w.worker_id for w in store.list_workers()} == {"dead", "me"}  # shown as stale
    store.heartbeat("me", 30, housekeeping=True)
    assert {w.worker_id for w in store.list_workers()} == {"me"}


def test_an_event_is_written_only_with_the_outcome_that_causes_it(store: AllPorts) -> None:
    """Guarantee 11: a refused (fenced-out) outcome writes no event; the written one writes
    its events in its own transaction, once however often it is finished."""
    from jobrunner.notify import NotifyTarget

    store.notify = (NotifyTarget(url="http://h/x", events=("failed", "exhausted"), name="t"),)
    store.insert_slots([slot("a", past())])
    (claimed,) = store.claim(worker_id="w1", limit=1, policies={"a": FORBID}, lease_ttl=30).started
    failed = Outcome(lease=claimed.lease, status="failed", error={"type": "E", "message": "m"})
    assert store.finish("intruder", [failed]) == set(), "not the holder: refused"
    assert store.outbox_status() == []
    assert store.finish("w1", [failed]) == {claimed.run.id}
    assert store.finish("w1", [failed]) == set()
    assert [(r["status"], r["count"]) for r in store.outbox_status()] == [("pending", 2)]
