"""Storage: the Alembic migrations build exactly the tables companion/db.py declares, on SQLite
and PostgreSQL, and running them again is a no-op."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from companion.db import make_engine, metadata, migrate

pytest_plugins = ("companion_fixtures",)  # the db_url fixture: SQLite and PostgreSQL


def test_migrations_match_the_declared_tables(db_url):
    engine = make_engine(db_url)
    migrate(engine)
    migrate(engine)  # every start runs them; the second time changes nothing
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    tables = set(inspect(engine).get_table_names())
    assert {"events", "dead_letters", "devices", "alerts", "alert_audit", "users"} <= tables
    uniques = inspect(engine).get_unique_constraints("events")
    assert any(set(u["column_names"]) == {"site", "device", "boot", "seq"} for u in uniques)
    assert version == "0002"
    engine.dispose()
