"""Engines for both backends and the database clock expression."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from jobrunner.store.tables import UTCDateTime

DB_ERRORS: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DBAPIError,
    OSError,
)
"""What a database that is down, restarting or unreachable raises through the store: callers
catch these (and back off) without importing the driver."""


IDLE_IN_TRANSACTION = 5.0
"""Seconds after which PostgreSQL ends a jobrunner transaction left idle (see postgres_options)."""


class db_now(FunctionElement[Any]):
    """The database's clock, optionally shifted by `seconds`, as a UTC timestamp.

    PostgreSQL: `now()` (the transaction's start) plus an interval. SQLite: `strftime(... 'now')`
    padded to the microsecond text format that `UTCDateTime` stores, so comparisons with stored
    values are correct as text. Every lease, heartbeat and due-time comparison uses this.
    """

    type = UTCDateTime()
    inherit_cache = True
    name = "db_now"

    def __init__(self, seconds: float | sa.ColumnElement[Any] = 0.0) -> None:
        arg = seconds if isinstance(seconds, sa.ColumnElement) else sa.literal(float(seconds))
        super().__init__(arg)


@compiles(db_now, "postgresql")
def _pg_now(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    (seconds,) = element.clauses
    return f"(now() + make_interval(secs => {compiler.process(seconds, **kw)}))"


@compiles(db_now, "sqlite")
def _sqlite_now(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    (seconds,) = element.clauses
    modifier = f"printf('%+.6f seconds', {compiler.process(seconds, **kw)})"
    return f"(strftime('%Y-%m-%d %H:%M:%f', 'now', {modifier}) || '000')"


def postgres_options(url: sa.URL) -> tuple[sa.URL, dict[str, Any]]:
    """The psycopg URL and connect args for a PostgreSQL URL (sync and async engines alike)."""
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {"connect_timeout": 5}  # an outage must not hang a call
    # A transaction whose client was cut off mid-way (a partition: the socket stays open) would
    # keep its row locks, and peers skip locked rows (SKIP LOCKED): an expired lease could not
    # be taken over. jobrunner's transactions never idle between statements, so the server
    # ends one that does after IDLE_IN_TRANSACTION seconds.
    ours = f"-c idle_in_transaction_session_timeout={int(IDLE_IN_TRANSACTION * 1000)}"
    given = url.query.get("options")
    if given is not None:
        url = url.difference_update_query(["options"])
    connect_args["options"] = f"{given} {ours}" if given else ours
    # `?prepared_statements=false` (jobrunner's own URL option): PgBouncer before 1.21 in
    # transaction mode cannot keep server-side prepared statements between transactions.
    flag = url.query.get("prepared_statements")
    if flag is not None:
        url = url.difference_update_query(["prepared_statements"])
        if str(flag).lower() in ("false", "0", "no", "off"):
            connect_args["prepare_threshold"] = None
    return url, connect_args


def create_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for `url` (PostgreSQL via psycopg 3, or SQLite via the stdlib driver).

    SQLite is set up for several processes on one host: WAL journal, a busy timeout, and
    `BEGIN IMMEDIATE` for every transaction so writers serialise instead of deadlocking.
    """
    url_obj = sa.make_url(url)
    if url_obj.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            url_obj, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        _setup_sqlite(engine)
        return engine
    url_obj, connect_args = postgres_options(url_obj)
    # No pre-ping (it would add a statement to every checkout of an idle worker): a
    # connection broken by an outage fails one call, SQLAlchemy then invalidates the pool and
    # the caller's backoff retries on fresh connections.
    kwargs.setdefault("connect_args", connect_args)
    if kwargs.get("poolclass") is None:
        kwargs.setdefault("pool_size", 4)
        kwargs.setdefault("max_overflow", 4)
    return sa.create_engine(url_obj, **kwargs)


def _setup_sqlite(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
