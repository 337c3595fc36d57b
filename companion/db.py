"""Storage: SQLAlchemy 2 tables, the engine, and Alembic migrations run on start.

SQLite file by default, PostgreSQL by URL. Times are Unix seconds (float) so both databases
store and compare them the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
    text,
)

metadata = MetaData()

# BigInteger autoincrement ids on PostgreSQL, plain INTEGER PRIMARY KEY (rowid) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("site", String(32), nullable=False),
    Column("device", String(32), nullable=False),
    Column("boot", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("type", String(16), nullable=False),
    Column("up_ms", BigInteger, nullable=False),
    Column("ts", Float),
    Column("received_at", Float, nullable=False),
    Column("conv", String(16)),
    Column("cue", String(16)),
    Column("level", Integer),
    Column("score", Float),
    Column("conv_s", Float),
    Column("stress_s", Float),
    Column("ttd_s", Float),
    Column("reason", String(32)),
    Column("phase", String(8)),
    Column("cues", Integer),
    Column("peak", Float),
    Column("action", String(8)),
    # idempotent ingest: a redelivered or replayed event is stored once
    UniqueConstraint("site", "device", "boot", "seq", name="uq_events_origin"),
    Index("ix_events_site_id", "site", "id"),
    Index("ix_events_received_at", "received_at"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("topic", String(256), nullable=False),
    Column("payload", LargeBinary, nullable=False),  # capped at Settings.dead_letter_max_bytes
    Column("size", Integer, nullable=False),  # the original payload size
    Column("reason", Text, nullable=False),
    Column("received_at", Float, nullable=False),
    Index("ix_dead_letters_received_at", "received_at"),
)

devices = Table(
    "devices",
    metadata,
    Column("site", String(32), primary_key=True),
    Column("device", String(32), primary_key=True),
    Column("status", String(8), nullable=False, default="unknown"),  # online/offline/unknown
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("status_at", Float),
    Column("tele", Text),  # last telemetry JSON as sent
    Column("tele_at", Float),
    Column("firmware", String(64)),
    Column("model", String(64)),
    Column("config", Text),  # per-device configuration JSON (published retained)
    Column("silent", Boolean, nullable=False, default=False),
)

# ---- phase 2: alerts, audit, users, sites ------------------------------------------------------

sites = Table(
    "sites",
    metadata,
    Column("site", String(32), primary_key=True),
    Column("name", String(128)),
    Column("first_contact", String(128)),
    Column("second_contact", String(128)),
    Column("config", Text),  # per-site configuration JSON (published retained)
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("site", String(32), nullable=False),
    Column("device", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),  # open / acknowledged / resolved
    Column("event_id", BigInteger),
    Column("conv", String(16)),
    Column("opened_at", Float, nullable=False),
    Column("acked_at", Float),
    Column("acked_by", String(64)),
    Column("resolved_at", Float),
    Column("resolved_by", String(64)),
    Column("notified_at", Float, nullable=False),
    Column("notify_count", Integer, nullable=False, default=1),
    Column("escalated_at", Float),
    # set with every change managers' devices must hear of, cleared once the broker took it: a
    # replica that dies in between leaves it set for another replica to publish (migration 0008)
    Column("publish_due", Float),
    Index("ix_alerts_site_state", "site", "state"),
    # one active alert per counter and kind, even with several replicas opening at once
    Index(
        "uq_alerts_active",
        "site",
        "device",
        "kind",
        unique=True,
        sqlite_where=text("state IN ('open', 'acknowledged')"),
        postgresql_where=text("state IN ('open', 'acknowledged')"),
    ),
)

alert_audit = Table(
    "alert_audit",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("alert_id", BigInteger, ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
    Column("at", Float, nullable=False),
    # opened / renotified / escalated / acknowledged / resolved
    Column("action", String(16), nullable=False),
    Column("actor", String(64), nullable=False),  # "system", "mqtt:<device>", "user:<name>"
    Column("state", String(16), nullable=False),  # state after the change
    Column("detail", Text),
    Index("ix_alert_audit_alert", "alert_id"),
)

users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(256), nullable=False),
    Column("role", String(16), nullable=False),  # admin / it / manager
    Column("sites", Text, nullable=False, default=""),  # comma-separated, managers only
    Column("created_at", Float, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex of the token
    Column("name", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

# server-side dashboard sessions: the cookie carries a random id, the table its hash; logout
# deletes the row, so the cookie is worthless afterwards (migration 0005_sessions)
sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_sessions_user", "user_id"),
)

# one row per failed login, keyed "user:<name>" and "ip:<address>" (the lockout counts them)
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("key", String(128), nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_login_failures_key_at", "key", "at"),
)

# How rows are shown and written: the helpers the writers (ingest, store, alerts) and the
# feed relay (replicas) share, kept here with the tables so none of them imports another.
EVENT_FIELDS = ("id", "received_at") + tuple(
    c.name for c in events.columns if c.name not in ("id", "received_at")
)


def event_public(row: Any) -> dict[str, Any]:
    """An event as the API shows it: absent optional fields are left out."""
    m = row._mapping if hasattr(row, "_mapping") else row
    return {k: m[k] for k in EVENT_FIELDS if m.get(k) is not None}


def alert_public(row: Any) -> dict[str, Any]:
    """An alert as the API shows it: every column but the publishing bookkeeping."""
    m = row._mapping if hasattr(row, "_mapping") else row
    return {c.name: m[c.name] for c in alerts.columns if c.name != "publish_due"}


def alerts_with_context(conn: Connection, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts with what a manager needs to act on them: the store's name, its first and second
    contacts, who should come now (`contact`: the second once escalated), and the cue that
    opened it (level, reason, score)."""
    site_ids = sorted({a["site"] for a in items})
    event_ids = sorted({a["event_id"] for a in items if a.get("event_id") is not None})
    site_rows = {
        r.site: r
        for r in conn.execute(select(sites).where(sites.c.site.in_(site_ids)))
    } if site_ids else {}  # fmt: skip
    cue_rows = {
        r.id: r
        for r in conn.execute(
            select(events.c.id, events.c.level, events.c.reason, events.c.score).where(
                events.c.id.in_(event_ids)
            )
        )
    } if event_ids else {}  # fmt: skip
    out = []
    for a in items:
        s = site_rows.get(a["site"])
        e = cue_rows.get(a.get("event_id"))
        first, second = (s.first_contact, s.second_contact) if s else (None, None)
        out.append(
            {
                **a,
                "site_name": (s.name if s and s.name else None),
                "first_contact": first,
                "second_contact": second,
                "contact": second if a.get("escalated_at") is not None else first,
                "level": e.level if e else None,
                "reason": e.reason if e else None,
                "score": e.score if e else None,
            }
        )
    return out


def insert_ignoring_duplicates(engine: Engine, table: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING in the engine's dialect."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    raise RuntimeError(f"unsupported database {engine.dialect.name!r}: use SQLite or PostgreSQL")


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str) -> Engine:
    """Engine for `url`; a SQLite file's folder is created, and SQLite runs in WAL mode so the
    ingest writer and the API readers do not block each other."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (run on every start; a no-op when current)."""
    from alembic import command
    from alembic.config import Config

    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
