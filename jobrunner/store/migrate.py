"""Schema migrations (Alembic, shipped in `jobrunner/migrations`).

`upgrade` brings any database to head. `init_if_empty` is what `jobrunner run` does: it creates
the schema of an *empty* database under a lock (so replicas starting together do not race) and
refuses to touch an existing schema that is behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from jobrunner.errors import SchemaOutOfDate

if TYPE_CHECKING:  # Alembic is imported only to migrate: a running worker does not need it
    from alembic.config import Config as AlembicConfig

VERSION_TABLE = "jobrunner_alembic_version"
HEAD = "0012"  # the newest migration; tests/integration/test_store.py checks it against Alembic
_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
_INIT_LOCK_KEY = 0x6A6F6272  # "jobr": the advisory lock taken while creating the schema


@dataclass(frozen=True, kw_only=True)
class SchemaStatus:
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _alembic_config(conn: sa.Connection | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    return HEAD


def alembic_head() -> str | None:
    """The head according to Alembic's scripts (HEAD must equal it)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _current(conn: sa.Connection) -> str | None:
    """The revision in the version table; None for a database without jobrunner's schema."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def status(engine: sa.Engine) -> SchemaStatus:
    """The revision the database is at (None when empty) and the head this code expects."""
    with engine.connect() as conn:
        return SchemaStatus(current=_current(conn), head=head_revision())


def upgrade(engine: sa.Engine, revision: str = "head") -> SchemaStatus:
    """Migrate the database to `revision` in one transaction, serialised by a lock."""
    with engine.begin() as conn:
        _lock(conn)
        _upgrade(conn, revision)
    return status(engine)


def init_if_empty(engine: sa.Engine) -> SchemaStatus:
    """Create the schema if the database has none; refuse a schema that is behind.

    Replicas that start together serialise on a lock (an advisory transaction lock on
    PostgreSQL, `BEGIN IMMEDIATE` on SQLite); the first creates the schema, the others find it.
    Raises SchemaOutOfDate (naming `jobrunner db upgrade`) when the schema exists but is behind.
    """
    with engine.begin() as conn:
        _lock(conn)
        current = _current(conn)
        if current is None:
            _create(conn)
            current = head_revision()
    result = SchemaStatus(current=current, head=head_revision())
    if not result.up_to_date and not _known(current):
        raise SchemaOutOfDate(
            f"the database schema is at revision {current}, which this jobrunner does not know: "
            "a newer jobrunner migrated it; run that version"
        )
    if not result.up_to_date:
        raise SchemaOutOfDate(
            f"the database schema is at revision {current}, this jobrunner needs {result.head}: "
            "run `jobrunner db upgrade` first"
        )
    return result


def _known(revision: str | None) -> bool:
    if revision is None:
        return False
    from alembic.script import ScriptDirectory

    try:
        return ScriptDirectory.from_config(_alembic_config()).get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown revision id
        return False


def _create(conn: sa.Connection) -> None:
    """Head's schema for an empty database, straight from the table definitions, stamped
    at head as Alembic stamps it. The migrations build the same schema (the tests compare
    both with `metadata` and with each other); this way a new replica never loads Alembic
    (about 8 MB of resident memory that would stay for the life of the process)."""
    from jobrunner.store.tables import metadata

    metadata.create_all(conn)
    version = sa.Table(
        VERSION_TABLE,
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
    )
    version.create(conn)
    conn.execute(version.insert().values(version_num=HEAD))


def _upgrade(conn: sa.Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(_alembic_config(conn), revision)


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_INIT_LOCK_KEY)))
