"""A statement executed on the driver's own cursor, for the hottest single-statement calls.

SQLAlchemy's execution of a compiled statement (its parameters, execution context and
result) costs the client about 110 µs on this project's benchmark machine, a third of one
`Client.enqueue`. A `Direct` statement is built with SQLAlchemy as any other, compiled once
per dialect, and on PostgreSQL run with psycopg's cursor on the same connection (inside the
caller's transaction or autocommit), its values passed through the statement's own types
both ways, as SQLAlchemy would. A driver error becomes the SQLAlchemy error it would have
been (`sa.exc.DBAPIError.instance`), and a lost connection is invalidated, so that callers'
outage handling sees no difference. Elsewhere (SQLite, the async client) the statement runs
through SQLAlchemy as usual.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.dml import UpdateBase


class Rows(list[tuple[Any, ...]]):
    """The rows a `Direct` statement returned, read as the operations read a result."""

    def all(self) -> list[tuple[Any, ...]]:
        return self

    def one_or_none(self) -> tuple[Any, ...] | None:
        if len(self) > 1:
            raise sa.exc.MultipleResultsFound("more than one row where one or none was expected")
        return self[0] if self else None

    def one(self) -> tuple[Any, ...]:
        row = self.one_or_none()
        if row is None:
            raise sa.exc.NoResultFound("no row where one was expected")
        return row


@dataclass(frozen=True)
class _Form:
    sql: str
    values: dict[str, Any]  # every parameter with its value in the statement (None if given)
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]  # the parameters' processors
    results: tuple[tuple[int, Callable[[Any], Any]], ...]  # the returned columns' processors
    returns: bool  # rows (a SELECT, or RETURNING): psycopg builds `description` anew


@contextmanager
def driver_errors(conn: sa.Connection, sql: str, values: Any = None) -> Iterator[Any]:
    """The driver's connection under `conn`; a driver error in the block is raised as the
    SQLAlchemy error it would have been, and a lost connection is invalidated."""
    dialect = conn.dialect
    driver = conn.connection.driver_connection
    assert driver is not None
    try:
        yield driver
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
        if lost:
            conn.invalidate(exc)
        error = dialect.loaded_dbapi.Error
        raise sa.exc.DBAPIError.instance(
            sql, values, exc, error, connection_invalidated=lost, dialect=dialect
        ) from exc


class Direct:
    """`statement` (a SELECT, of a CTE that writes maybe, or an INSERT, UPDATE or DELETE with
    or without RETURNING), run on the driver's cursor on PostgreSQL."""

    def __init__(self, statement: sa.Select[Any] | UpdateBase) -> None:
        self.statement = statement
        self._forms: weakref.WeakKeyDictionary[Dialect, _Form] = weakref.WeakKeyDictionary()

    def execute(self, conn: sa.Connection, params: Mapping[str, Any]) -> Any:
        """The rows (`Rows`; a `CursorResult` where the statement runs through SQLAlchemy)."""
        dialect = conn.dialect
        if dialect.name != "postgresql":
            return conn.execute(self.statement, params)
        form = self._forms.get(dialect) or self._compile(dialect)
        values = {**form.values, **params}
        for name, process in form.binds:
            values[name] = process(values[name])
        with driver_errors(conn, form.sql, values) as driver, driver.cursor() as cursor:
            cursor.execute(form.sql, values)
            got = cursor.fetchall() if form.returns else []
        return Rows(got) if not form.results else Rows(_processed(got, form.results))

    def _compile(self, dialect: Dialect) -> _Form:
        compiled = self.statement.compile(dialect=dialect)
        binds = []
        for name, param in compiled.binds.items():
            process = param.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                binds.append((name, process))
        assert not compiled.escaped_bind_names, "parameter names psycopg takes as they are"
        columns = self.statement.exported_columns  # a SELECT's columns, or what it RETURNs
        form = _Form(
            sql=compiled.string,
            values={name: p.effective_value for name, p in compiled.binds.items()},
            binds=tuple(binds),
            returns=bool(columns),
            results=tuple(
                (i, process)
                for i, c in enumerate(columns)
                if (process := c.type.dialect_impl(dialect).result_processor(dialect, None))
            ),
        )
        self._forms[dialect] = form
        return form


def _processed(
    got: list[tuple[Any, ...]], results: tuple[tuple[int, Callable[[Any], Any]], ...]
) -> list[tuple[Any, ...]]:
    """The rows with the columns that have a processor converted (most have none: a wide
    row costs its typed columns only)."""
    out = []
    for row in got:
        values = list(row)
        for i, process in results:
            values[i] = process(values[i])
        out.append(tuple(values))
    return out
