"""Alembic environment shipped inside the package; run through `jobrunner db upgrade`."""

from __future__ import annotations

from alembic import context

from jobrunner.store.migrate import VERSION_TABLE
from jobrunner.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
