"""Alerts are not lost with the replica that opened them (issue 18; companion/alerts.py): the
alert commits in the transaction that stores its call_manager event, and goes out through an
outbox (`alerts.publish_due`) that any replica's watcher empties when the one that opened it
died before publishing. Each change is published once, also with two replicas sweeping at once
(PostgreSQL, SKIP LOCKED), and a publish the broker did not take is tried again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from companion.alerts import OUTBOX_GRACE_S, AlertManager
from companion.config import Settings
from companion.db import alerts, events, make_engine, migrate

pytest_plugins = ("companion_fixtures",)  # the db_url fixture: SQLite and PostgreSQL


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Broker:
    """The managers' side: every publication, per alert id; `refuse` makes it not take them."""

    def __init__(self, delay: float = 0.0) -> None:
        self.got: dict[int, list[str]] = {}
        self.refuse = False
        self.delay = delay
        self._lock = threading.Lock()

    def publish(self, topic: str, body: bytes) -> bool:
        import json

        if self.refuse:
            return False
        time.sleep(self.delay)
        a = json.loads(body)
        with self._lock:
            self.got.setdefault(a["id"], []).append(a["state"])
        return True


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    migrate(e)
    yield e
    e.dispose()


def _replica(engine: Engine, broker: Broker, clock: Clock) -> AlertManager:
    s = Settings(env="demo", db_url=str(engine.url.render_as_string(hide_password=False)))
    return AlertManager(s, engine, publish=broker.publish, notify=lambda _k, _i: None,
                        clock=clock)  # fmt: skip


def _store_call_manager(engine: Engine, mgr: AlertManager, device: str, seq: int,
                        commit: bool = True) -> Any:  # fmt: skip
    """What the ingest does: the event and, in its transaction, the alert it opens. Returns the
    after-commit step (not run: the replica died right after the commit)."""
    row = {"site": "store-1", "device": device, "boot": 1, "seq": seq, "type": "cue",
           "up_ms": seq, "received_at": time.time(), "conv": "c1", "cue": "call_manager",
           "level": 3, "score": 0.9}  # fmt: skip
    conn = engine.connect()
    tx = conn.begin()
    row["id"] = conn.execute(insert(events).values(**row).returning(events.c.id)).scalar()
    after = mgr.open_with_events(conn, [row])
    (tx.commit if commit else tx.rollback)()
    conn.close()
    return after


def test_an_alert_its_replica_did_not_publish_goes_out_once_from_another(engine):
    clock, broker = Clock(), Broker()
    dead, other = _replica(engine, broker, clock), _replica(engine, broker, clock)
    _store_call_manager(engine, dead, "counter-1", 1)  # committed; then the replica died
    _store_call_manager(engine, dead, "counter-2", 1, commit=False)  # died before its commit
    with engine.connect() as conn:
        (a,) = conn.execute(select(alerts)).all()  # the event and its alert, or neither
    assert a.device == "counter-1" and a.publish_due is not None
    assert other.publish_due() == 0 and broker.got == {}  # its own replica may still send it
    clock.now += OUTBOX_GRACE_S + 0.1
    other.check()  # the watcher's pass
    assert broker.got == {a.id: ["open"]}
    other.check()
    assert broker.got == {a.id: ["open"]}  # once


def test_an_alert_the_broker_did_not_take_is_published_on_a_later_pass(engine):
    clock, broker = Clock(), Broker()
    mgr = _replica(engine, broker, clock)
    broker.refuse = True
    _store_call_manager(engine, mgr, "counter-1", 1)()  # the replica lives; the broker is away
    assert broker.got == {}
    broker.refuse = False
    (alert_id,) = [a["id"] for a in _active(engine)]
    mgr.acknowledge(alert_id, "user:ann")  # a change before the first state went out
    assert broker.got == {alert_id: ["acknowledged"]}  # the row as it is now, not the old one
    clock.now += OUTBOX_GRACE_S + 0.1
    mgr.check()
    assert broker.got == {alert_id: ["acknowledged"]}


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # replicas share PostgreSQL
def test_two_replicas_sweeping_at_once_publish_each_alert_once(engine):
    clock, broker = Clock(), Broker(delay=0.05)
    mgrs = [_replica(engine, broker, clock) for _ in range(2)]
    for d in range(12):
        _store_call_manager(engine, mgrs[0], f"counter-{d}", 1)  # none published by its replica
    clock.now += OUTBOX_GRACE_S + 0.1
    threads = [threading.Thread(target=m.publish_due) for m in mgrs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(broker.got) == 12 and all(v == ["open"] for v in broker.got.values())


def _active(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(alerts))]
