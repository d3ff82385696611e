"""Schema migrations (Alembic, shipped in `jobrunner/migrations`).

`upgrade` brings any database to head. `init_if_empty` is what `jobrunner run` does: it creates
the schema of an *empty* database under a lock (so replicas starting together do not race) and
refuses to touch an existing schema that is behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from jobrunner.errors import SchemaOutOfDate

VERSION_TABLE = "jobrunner_alembic_version"
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
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "jobrunner ships at least one migration"
    return head


def _current(conn: sa.Connection) -> str | None:
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def status(engine: sa.Engine) -> SchemaStatus:
    """The revision the database is at (None when empty) and the head this code expects."""
    with engine.connect() as conn:
        return SchemaStatus(current=_current(conn), head=head_revision())


def upgrade(engine: sa.Engine, revision: str = "head") -> SchemaStatus:
    """Migrate the database to `revision` in one transaction, serialised by a lock."""
    with engine.begin() as conn:
        _lock(conn)
        command.upgrade(_alembic_config(conn), revision)
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
            command.upgrade(_alembic_config(conn), "head")
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
    try:
        return ScriptDirectory.from_config(_alembic_config()).get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown revision id
        return False


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_INIT_LOCK_KEY)))
