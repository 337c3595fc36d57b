"""Store-and-forward: the durable event queue and the agent's small persistent state.

Every event goes through SQLite before it is published, and its row is deleted only when the
broker's PUBACK for it arrives, so a broker outage, a Wi-Fi drop or a power cut loses nothing
that was queued. The queue is bounded: past `max_events` the oldest events are dropped (the
newest say most about the counter now) and counted, and the count is reported in telemetry.

Only encoded event payloads (closed schema, no audio, no features) are ever stored here.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class QueuedEvent:
    id: int
    topic: str
    payload: bytes


class EventQueue:
    """A bounded FIFO of (topic, payload) on disk, safe to share between the pipeline thread
    (put) and the MQTT thread (peek/ack)."""

    def __init__(self, path: str | Path, max_events: int = 10000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_events = max_events
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        # WAL + synchronous=NORMAL: a committed event survives a process kill; a power cut may
        # lose at most the last transaction, never corrupt the file.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def put(self, topic: str, payload: bytes) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO outbox (topic, payload) VALUES (?, ?)", (topic, payload)
                )
                (depth,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
                over = depth - self.max_events
                if over > 0:
                    self._db.execute(
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                        (over,),
                    )
                    self._bump("dropped", over)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return int(cur.lastrowid or 0)

    def peek(self, limit: int, after_id: int = 0) -> list[QueuedEvent]:
        """The oldest `limit` events with id > after_id, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [QueuedEvent(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def ack(self, event_id: int) -> None:
        """The broker has the event (PUBACK): forget it."""
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (event_id,))

    def depth(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(n)

    @property
    def dropped(self) -> int:
        return self.get("dropped")

    def get(self, key: str, default: int = 0) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else default

    def _bump(self, key: str, by: int) -> int:
        self._db.execute(
            "INSERT INTO state (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (key, by),
        )
        (value,) = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return int(value)

    def next_boot(self) -> int:
        """Count this start of the agent (the `boot` field of every event)."""
        with self._lock:
            return self._bump("boot", 1)

    def close(self) -> None:
        with self._lock:
            self._db.close()
