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
    assert version == "0003"
    engine.dispose()


def test_one_active_alert_per_counter_and_kind_is_enforced_by_the_database(db_url):
    import time

    import pytest
    from sqlalchemy import insert, update
    from sqlalchemy.exc import IntegrityError

    from companion.db import alerts

    engine = make_engine(db_url)
    migrate(engine)
    row = {"site": "s", "device": "d", "kind": "call_manager", "state": "open",
           "opened_at": time.time(), "notified_at": time.time(), "notify_count": 1}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(alerts), row)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(alerts), row)
    with engine.begin() as conn:  # once resolved, the next incident may open
        conn.execute(update(alerts).values(state="resolved"))
        conn.execute(insert(alerts), row)
        conn.execute(insert(alerts), {**row, "kind": "silent_device"})
    engine.dispose()
