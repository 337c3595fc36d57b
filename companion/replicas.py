"""Several companions behind one broker: each replica takes a share of the messages (MQTT
shared subscription `$share/<group>/…`) and stores into the same PostgreSQL database.

Each dashboard is connected to one replica but must see everything, so every replica announces
what it stored and which alerts changed with PostgreSQL NOTIFY (sent inside the same
transaction, so it goes out only once committed); a `FeedRelay` on every other replica LISTENs,
reads those rows and hands them to its own live feed.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Connection, Engine, select, text

from companion.db import alert_public, alerts, alerts_with_context, event_public, events
from companion.live import LiveFeed

log = logging.getLogger("calmcue.companion.replicas")

CHANNEL = "calmcue_feed"
_IDS_PER_NOTICE = 800  # keeps a payload well under PostgreSQL's 8000-byte limit


def notify(conn: Connection, replica: str, kind: str, ids: list[int]) -> None:
    """Announce stored events (kind "e") or changed alerts (kind "a") to the other replicas."""
    for i in range(0, len(ids), _IDS_PER_NOTICE):
        chunk = ",".join(str(x) for x in ids[i : i + _IDS_PER_NOTICE])
        conn.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": f"{replica}:{kind}:{chunk}"},
        )


class FeedRelay:
    """LISTENs for the other replicas' notices and publishes their rows on this live feed."""

    def __init__(self, engine: Engine, replica: str, feed: LiveFeed):
        self.engine = engine
        self.replica = replica
        self.feed = feed
        self.relayed = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="calmcue-feed-relay", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        self._ready.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import psycopg

        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._ready.set()
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5):
                            self._relay(n.payload)
            except Exception:
                log.exception("feed relay lost its database connection; reconnecting")
                self._stop.wait(1.0)

    def _relay(self, payload: str) -> None:
        replica, kind, ids_text = payload.split(":", 2)
        if replica == self.replica:
            return  # our own feed already has these
        ids = [int(x) for x in ids_text.split(",") if x]
        table, public, name = (
            (events, event_public, "event") if kind == "e" else (alerts, alert_public, "alert")
        )
        with self.engine.connect() as conn:
            rows: list[dict[str, Any]] = [
                public(r)
                for r in conn.execute(select(table).where(table.c.id.in_(ids)).order_by(table.c.id))
            ]
        if rows and name == "alert":
            with self.engine.connect() as conn:
                rows = alerts_with_context(conn, rows)  # as the replica that changed it sent it
        if rows:
            self.relayed += len(rows)
            self.feed.publish(name, rows)
