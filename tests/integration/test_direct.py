"""Statements run on the driver's cursor (`jobrunner.store.direct`) and the autocommit
connections of single-statement calls, on a real PostgreSQL: values go through the
statement's types both ways, driver errors are SQLAlchemy's, a lost connection is
invalidated and the next call gets a fresh one, and no connection goes back to the pool in
autocommit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from jobrunner import Client
from jobrunner.store.access import hot, read, write, write_one
from jobrunner.store.direct import Direct, Rows
from jobrunner.store.engine import create_engine
from jobrunner.store.sql import Op
from jobrunner.store.tables import UTCDateTime, job_runs
from tests.integration.test_fastapi import publish

pytestmark = pytest.mark.postgres


def one(statement: Direct | sa.Executable, params: dict[str, Any] | None = None) -> Op[Any]:
    return (yield statement, params or {})


def test_values_go_through_the_statements_types_both_ways(pg_url: str) -> None:
    engine = create_engine(pg_url)
    when = sa.bindparam("when", type_=UTCDateTime())
    doc = sa.bindparam("doc", type_=sa.JSON())
    statement = Direct(
        sa.select(
            sa.cast(when, UTCDateTime()).label("at"),
            sa.cast(doc, sa.JSON()).label("doc"),
            sa.literal(7).label("seven"),
            sa.cast(sa.bindparam("nothing", type_=sa.String()), sa.String()).label("none"),
        )
    )
    berlin = datetime(2026, 1, 1, 10, 0, tzinfo=UTC) + timedelta(hours=1)
    rows = read(engine, one(statement, {"when": berlin, "doc": {"a": [1, None]}}))
    assert isinstance(rows, Rows) and len(rows) == 1
    at, got, seven, none = rows.one_or_none()
    assert at == berlin and at.tzinfo == UTC
    assert (got, seven, none) == ({"a": [1, None]}, 7, None)
    with pytest.raises(ValueError, match="naive"):  # the type's own check runs
        read(engine, one(statement, {"when": datetime(2026, 1, 1), "doc": {}}))
    engine.dispose()


def test_a_driver_error_is_sqlalchemys_and_a_lost_connection_is_replaced(pg_url: str) -> None:
    engine = create_engine(pg_url, pool_size=1, max_overflow=0)
    bad = Direct(sa.select(sa.cast(sa.bindparam("text", type_=sa.String()), sa.Integer)))
    with pytest.raises(sa.exc.DataError, match="invalid input syntax"):
        read(engine, one(bad, {"text": "x"}))
    pid = sa.select(sa.func.pg_backend_pid())
    backend = read(engine, one(Direct(pid))).one_or_none()[0]
    killer = create_engine(pg_url)
    with killer.connect() as other:  # the server side of the pool's connection goes
        other.execute(sa.select(sa.func.pg_terminate_backend(backend)))
    killer.dispose()
    with pytest.raises(sa.exc.OperationalError) as lost:
        read(engine, one(Direct(pid)))
    assert lost.value.connection_invalidated
    assert read(engine, one(Direct(pid))).one_or_none()[0] != backend  # a fresh connection
    engine.dispose()


def test_more_rows_than_one_is_refused() -> None:
    with pytest.raises(sa.exc.MultipleResultsFound):
        Rows([(1,), (2,)]).one_or_none()
    assert Rows([]).one_or_none() is None


def test_no_connection_goes_back_to_the_pool_in_autocommit(pg_url: str) -> None:
    """After single-statement calls on the pool's one connection, a transaction still rolls
    back what it wrote when it fails."""
    publish(pg_url)
    engine = create_engine(pg_url, pool_size=1, max_overflow=0)
    with Client.from_url(pg_url) as client:
        client.enqueue("adhoc")
    read(engine, one(sa.select(sa.literal(1))))
    write_one(engine, one(job_runs.update().values(priority=5)))

    def fails() -> Op[None]:
        yield job_runs.delete()
        raise RuntimeError("after the delete")

    with pytest.raises(RuntimeError):
        write(engine, fails())
    with engine.connect() as conn:
        assert conn.connection.driver_connection.autocommit is False
        assert conn.execute(sa.select(sa.func.count()).select_from(job_runs)).scalar() == 1
    engine.dispose()


SETTINGS = sa.select(sa.func.current_setting("enable_seqscan"), sa.func.txid_current_if_assigned())


def test_a_hot_transaction_is_one_transaction_with_index_plans(pg_url: str) -> None:
    """The claim's and outcomes' transaction: its settings hold for every statement in it
    and end with it, what it wrote commits together, and a failure rolls all of it back and
    leaves a pooled connection that is neither in a transaction nor in autocommit."""
    publish(pg_url)
    engine = create_engine(pg_url, pool_size=1, max_overflow=0)
    with Client.from_url(pg_url) as client:
        client.enqueue("adhoc")
    with hot(engine) as conn:
        conn.execute(job_runs.update().values(priority=3))
        first = Direct(SETTINGS).execute(conn, {}).one()
        assert conn.execute(SETTINGS).one() == first  # SQLAlchemy's statements: the same one
        assert first[0] == "off" and first[1] is not None
    with engine.connect() as conn:
        assert conn.execute(SETTINGS).one()[0] == "on"  # SET LOCAL ended with it
        assert conn.execute(sa.select(job_runs.c.priority)).scalar() == 3
    with pytest.raises(RuntimeError), hot(engine) as conn:
        Direct(job_runs.update().values(priority=9)).execute(conn, {})
        raise RuntimeError("after the update")
    with pytest.raises(sa.exc.DataError), hot(engine) as conn:  # the driver's error, as ours
        conn.execute(job_runs.update().values(priority=8))
        Direct(sa.select(sa.cast(sa.literal("x"), sa.Integer))).execute(conn, {})
    with engine.connect() as conn:
        assert conn.connection.driver_connection.autocommit is False
        assert conn.execute(sa.select(job_runs.c.priority)).scalar() == 3
    engine.dispose()
