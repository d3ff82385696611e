"""Shared fixtures: a fresh, migrated database per test on SQLite and on PostgreSQL.

PostgreSQL comes from JOBRUNNER_TEST_DATABASE_URL; without it a testcontainers PostgreSQL is
started where a Docker engine exists; otherwise the test skips with the reason -- except under
CI=true, where a database test that cannot get its database fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobrunner.store import migrate
from jobrunner.store.engine import create_engine
from jobrunner.store.store import Store

ROOT = Path(__file__).resolve().parent.parent
_TEMPLATE = f"jobrunner_tpl_{os.getpid()}"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and PostgreSQL is unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database."""
    url = os.environ.get("JOBRUNNER_TEST_DATABASE_URL")
    if url:
        yield url
        return
    try:
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:15", driver="psycopg")
        container.start()
    except Exception as exc:
        _unavailable(
            f"no JOBRUNNER_TEST_DATABASE_URL and no Docker engine ({exc.__class__.__name__})"
        )
        return
    try:
        yield container.get_connection_url()
    finally:
        container.stop()


def _admin(url: str) -> sa.Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)


@pytest.fixture(scope="session")
def pg_template(pg_server_url: str) -> Iterator[str]:
    """A migrated template database that per-test databases are cloned from."""
    admin = _admin(pg_server_url)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{_TEMPLATE}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{_TEMPLATE}"')
    url = sa.make_url(pg_server_url).set(database=_TEMPLATE)
    engine = create_engine(url.render_as_string(hide_password=False), poolclass=sa.NullPool)
    migrate.upgrade(engine)
    engine.dispose()
    yield _TEMPLATE
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)')
    admin.dispose()


def new_pg_database(server_url: str, template: str | None) -> str:
    name = f"jr_{uuid.uuid4().hex[:12]}"
    admin = _admin(server_url)
    with admin.connect() as conn:
        tpl = f' TEMPLATE "{template}"' if template else ""
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"{tpl}')
    admin.dispose()
    return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(server_url: str, url: str) -> None:
    name = sa.make_url(url).database
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def pg_url(pg_server_url: str, pg_template: str) -> Iterator[str]:
    """A fresh migrated PostgreSQL database for this test."""
    url = new_pg_database(pg_server_url, pg_template)
    yield url
    drop_pg_database(pg_server_url, url)


@pytest.fixture
def empty_pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database with no schema."""
    url = new_pg_database(pg_server_url, None)
    yield url
    drop_pg_database(pg_server_url, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'jobrunner.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh migrated database of each backend."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.from_url(db_url)
    yield s
    s.close()
