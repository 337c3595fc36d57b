"""Storage: the Alembic migrations build exactly the tables companion/db.py declares, on SQLite
and PostgreSQL, and running them again is a no-op."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from companion.db import make_engine, metadata, migrate
from companion.fleet_tables import fleet_metadata

pytest_plugins = ("companion_fixtures",)  # the db_url fixture: SQLite and PostgreSQL


def test_migrations_match_the_declared_tables(db_url):
    engine = make_engine(db_url)
    migrate(engine)
    migrate(engine)  # every start runs them; the second time changes nothing
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), [metadata, fleet_metadata]) == []
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    tables = set(inspect(engine).get_table_names())
    assert {"events", "dead_letters", "devices", "alerts", "alert_audit", "users"} <= tables
    assert {t.name for t in fleet_metadata.sorted_tables} <= tables
    uniques = inspect(engine).get_unique_constraints("events")
    assert any(set(u["column_names"]) == {"site", "device", "boot", "seq"} for u in uniques)
    assert version == _head()
    engine.dispose()


def _head() -> str:
    """The newest migration (the version a migrated database must be at)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from companion.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return str(ScriptDirectory.from_config(cfg).get_current_head())


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


def test_fleet_migration_adopts_tables_made_before_it(db_url):
    """Before migration 0004 the fleet module made its tables itself; such a database upgrades
    without error and keeps its rows."""
    import time

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import insert, select

    from companion.db import MIGRATIONS
    from companion.fleet_tables import inventory

    engine = make_engine(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    fleet_metadata.create_all(engine)  # what the old start-up did
    with engine.begin() as conn:
        conn.execute(insert(inventory).values(
            device="cc-0a1b2c", site="store-1", name="counter-2", label="BOX-0042",
            profile="esp32s3-headset", target="esp32", version="0.1.0", provisioned_at=time.time(),
        ))
    migrate(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == _head()
        assert conn.execute(select(inventory.c.label)).scalars().all() == ["BOX-0042"]
    engine.dispose()
