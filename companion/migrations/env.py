"""Alembic environment: companion.db.migrate() passes an open connection in; `alembic` on the
command line is not needed (migrations run on every start)."""

from __future__ import annotations

from alembic import context

from companion.db import make_engine, metadata
from companion.fleet_tables import fleet_metadata

config = context.config
target_metadata = [metadata, fleet_metadata]


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # invoked by the alembic CLI with sqlalchemy.url set
        engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as conn:
            context.configure(
                connection=conn, target_metadata=target_metadata, render_as_batch=True
            )
            context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    context.run_migrations()


run_migrations()
