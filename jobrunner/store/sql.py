"""How the store's topic modules write and run statements; no statement of its own.

An *operation* (`Op`) is a generator: it yields SQLAlchemy statements (alone or with their
parameters), is sent each one's result and returns the operation's value. `run_sync` drives
one on a `Connection`, `run_async` on an `AsyncConnection`, inside the caller's transaction.
So a statement and the logic around it (validation, fallbacks, NOTIFY) are written once, in
the topic module that owns its table (claim, leases, slots, catalog, history, queue), for
the sync stores and the async client alike; operations compose with `yield from`.

The builders here keep a statement's text the same whatever the number of rows, so that
PostgreSQL prepares it once: lists and rows go as array parameters there, and as expanding
parameters or an executemany on SQLite.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from jobrunner.store.direct import Direct
from jobrunner.store.tables import PgArray

if TYPE_CHECKING:  # importing sqlalchemy.ext.asyncio needs greenlet: only the async path does
    from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")
Step = sa.Executable | Direct | tuple[sa.Executable | Direct, Any]
Op = Generator[Step, Any, T]
"""An operation: yields statements (alone or with parameters), is sent each one's result
(a `CursorResult`), returns its value."""


def run_sync(conn: sa.Connection, op: Op[T]) -> T:
    """Execute every statement of `op` on `conn`; returns the operation's value."""
    try:
        step = next(op)
        while True:
            statement, params = step if isinstance(step, tuple) else (step, None)
            if isinstance(statement, Direct):
                result = statement.execute(conn, params or {})
            else:
                result = conn.execute(statement, params)
            step = op.send(result)
    except StopIteration as done:
        return cast(T, done.value)


async def run_async(conn: AsyncConnection, op: Op[T]) -> T:
    """Execute every statement of `op` on the async `conn`; returns the operation's value."""
    try:
        step = next(op)
        while True:
            statement, params = step if isinstance(step, tuple) else (step, None)
            if isinstance(statement, Direct):  # through SQLAlchemy: the async driver's own way
                statement = statement.statement
            result = await conn.execute(statement, params)
            step = op.send(result)
    except StopIteration as done:
        return cast(T, done.value)


def insert(dialect: str, table: sa.Table) -> Any:
    """The dialect's INSERT (with ON CONFLICT support) for `table`."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def any_of(dialect: str, column: Any, name: str) -> sa.ColumnElement[bool]:
    """`column IN :name`, the list given at execution. On PostgreSQL `= ANY(:name)`: one
    array parameter whatever the count, so the statement text (and psycopg's prepared form)
    stays the same."""
    if dialect == "postgresql":
        array = sa.bindparam(name, type_=PgArray.of(column.type))
        return column == sa.any_(array)  # type: ignore[no-any-return]
    return column.in_(sa.bindparam(name, expanding=True))  # type: ignore[no-any-return]


def unnest(*columns: tuple[str, Any]) -> Any:
    """PostgreSQL `unnest(:v_a, :v_b, ...) AS v(a, b, ...)`: rows passed as one array per
    column, given at execution as parameters `v_a`, `v_b`, ..."""
    arrays = [sa.bindparam(f"v_{name}", type_=PgArray.of(kind)) for name, kind in columns]
    return (
        sa.func.unnest(*arrays)
        .table_valued(*(sa.column(name, kind) for name, kind in columns))
        .render_derived(name="v")
    )


def given(dialect: str, kinds: dict[str, Any]) -> dict[str, Any]:
    """The per-row values of a statement built for both dialects (see `rows`): the columns of
    `unnest(...) AS v(...)` on PostgreSQL (one array parameter per key), bind parameters of
    an executemany on SQLite."""
    if dialect == "postgresql":
        table = unnest(*kinds.items())
        return {k: table.c[k] for k in kinds}
    return {k: sa.bindparam(k, type_=kind) for k, kind in kinds.items()}


def json_text(dialect: str, value: Any) -> Any:
    """A JSON column's value from JSON text (a bind or a column), as it is: cast on
    PostgreSQL, stored as text on SQLite."""
    return sa.cast(value, sa.JSON) if dialect == "postgresql" else value


def rows(dialect: str, values: list[dict[str, Any]], **same: Any) -> Any:
    """Execution parameters for rows of a statement built for both dialects: on PostgreSQL
    one array per key (`v_<key>`, see `unnest`), on SQLite the rows for an executemany;
    `same` holds the parameters every row shares."""
    if dialect == "postgresql":
        return {**{f"v_{key}": [row[key] for row in values] for key in values[0]}, **same}
    return [{**row, **same} for row in values]
