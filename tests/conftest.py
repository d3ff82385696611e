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
from tests.support import AllPorts

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


@pytest.fixture(params=["sqlite", "postgresql", "pgbouncer"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh migrated database of each backend (and PostgreSQL through PgBouncer)."""
    name = {"sqlite": "sqlite_url", "postgresql": "pg_url", "pgbouncer": "pgbouncer_url"}
    url: str = request.getfixturevalue(name[request.param])
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[AllPorts]:
    s = AllPorts.from_url(db_url)
    yield s
    s.close()


PGBOUNCER_PORT = int(os.environ.get("JOBRUNNER_TEST_PGBOUNCER_PORT", "6439"))


@pytest.fixture(scope="session")
def pgbouncer(pg_server_url: str) -> Iterator[int]:
    """PgBouncer (Debian's package) in transaction-pooling mode in front of the test server;
    yields its port. Databases map one to one (`* = host=... port=...`)."""
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        _unavailable("pgbouncer is not installed (Debian package `pgbouncer`)")
    server = sa.make_url(pg_server_url)
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="jobrunner-pgbouncer-"))  # readable by `postgres`
    work.chmod(0o777)
    (work / "users.txt").write_text(f'"{server.username or "postgres"}" ""\n')
    (work / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {PGBOUNCER_PORT}\n"
        f"unix_socket_dir =\nauth_type = trust\nauth_file = {work / 'users.txt'}\n"
        "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 40\n"
        f"logfile = {work / 'pgbouncer.log'}\npidfile = {work / 'pgbouncer.pid'}\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    for f in work.iterdir():
        f.chmod(0o666)
    args = [binary, str(work / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        args[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", PGBOUNCER_PORT), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        log = (work / "pgbouncer.log").read_text() if (work / "pgbouncer.log").exists() else ""
        _unavailable(f"pgbouncer did not start: {log[-500:]}")
    yield PGBOUNCER_PORT
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def pgbouncer_url(pg_url: str, pgbouncer: int) -> str:
    """The test's database, reached through PgBouncer in transaction mode."""
    url = (
        sa.make_url(pg_url).set(port=pgbouncer).update_query_dict({"prepared_statements": "false"})
    )
    return url.render_as_string(hide_password=False)
