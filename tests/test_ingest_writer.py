"""The ingest writer's batches, without a broker: what one batch leaves in the devices table is
what its messages, applied one by one in arrival order, would leave; events are stored once
and a call_manager opens its alert once, in the same transaction. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from companion_helpers import cue, topic_of
from sqlalchemy import select, update

from companion import db
from companion.alerts import AlertManager
from companion.config import Settings
from companion.ingest import Ingest

pytest_plugins = ("companion_fixtures",)  # the db_url fixture: SQLite and PostgreSQL

SITE = "store-7"


def tele(**fields) -> bytes:
    return json.dumps({"uptime_s": 5.0, **fields}).encode()


def ev(device: str, seq: int, **kw) -> tuple[str, bytes]:
    e = cue(site=SITE, device=device, seq=seq, **kw)
    return topic_of(e), json.dumps(e).encode()


def status_topic(device: str, leaf: str = "status") -> str:
    return f"calmcue/v1/{SITE}/{device}/{leaf}"


@pytest.fixture
def writer(db_url: str, tmp_path: Path):
    engine = db.make_engine(db_url)
    db.migrate(engine)
    # one batch per flush: the writer waits for the barrier, not for a timer
    settings = Settings(env="demo", db_url=db_url, mqtt_url=None, data_dir=tmp_path,
                        ingest_batch_ms=10_000, ingest_batch_rows=10_000)  # fmt: skip
    ingest = Ingest(settings, engine)
    manager = AlertManager(settings, engine, publish=lambda _t, _p: True,
                           notify=lambda _k, _i: None)  # fmt: skip
    ingest.in_commit(manager.open_with_events)
    ingest.start()
    yield ingest, engine
    ingest.stop()
    engine.dispose()


def send(ingest: Ingest, messages: list[tuple[str, bytes, float]]) -> None:
    """Messages as the network thread classifies them, with the time each arrived; then wait
    until the writer stored them all (in one batch)."""
    before = ingest.counters().batches
    for k, (topic, payload, at) in enumerate(messages):
        ingest._classify(topic, payload, at, (0, k + 1, 0))
    assert ingest.flush(30)
    assert ingest.counters().batches == before + 1


def rows(engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r.device: dict(r._mapping) for r in conn.execute(select(db.devices))}


def test_one_batch_leaves_each_device_as_its_messages_in_order_would(writer):
    ingest, engine = writer
    # known devices, as an earlier batch left them; `quiet` has gone silent since
    send(ingest, [(status_topic(d), b"online", 100.0) for d in ("a", "b", "quiet", "evs")])
    with engine.begin() as conn:
        conn.execute(update(db.devices).where(db.devices.c.device == "quiet")
                     .values(silent=True, firmware="0.9"))  # fmt: skip
    send(ingest, [
        # a: its LWT, then it reports again: online, the LWT's time kept as status_at
        (status_topic("a"), b"offline", 200.0),
        (status_topic("a", "tele"), tele(agent="1.2.0", model="m1"), 201.0),
        # b: reports with a firmware name, then without one, then its LWT
        (status_topic("b", "tele"), tele(agent="2.0.0"), 202.0),
        (status_topic("b", "tele"), tele(queue=3), 203.0),
        (status_topic("b"), b"offline", 204.0),
        # quiet: only its LWT, which is not a sign of life
        (status_topic("quiet"), b"offline", 205.0),
        # evs: events only; new: a device never seen before, events only
        (*ev("evs", 1), 206.0),
        (*ev("evs", 2), 207.0),
        (*ev("new", 1), 208.0),
    ])  # fmt: skip
    got = rows(engine)
    a, b, quiet, evs, new = (got[d] for d in ("a", "b", "quiet", "evs", "new"))
    assert (a["status"], a["status_at"], a["last_seen"]) == ("online", 200.0, 201.0)
    assert (a["firmware"], a["model"], a["tele_at"]) == ("1.2.0", "m1", 201.0)
    assert json.loads(a["tele"])["agent"] == "1.2.0"
    assert (b["status"], b["status_at"], b["last_seen"]) == ("offline", 204.0, 203.0)
    assert (b["firmware"], b["tele_at"], json.loads(b["tele"])) == ("2.0.0", 203.0,
                                                                   {"uptime_s": 5.0, "queue": 3})
    assert (quiet["status"], quiet["status_at"], quiet["last_seen"]) == ("offline", 205.0, 100.0)
    assert quiet["silent"] is True and quiet["firmware"] == "0.9"
    assert (evs["status"], evs["last_seen"], evs["silent"], evs["tele"]) == ("online", 207.0,
                                                                             False, None)
    assert (new["status"], new["first_seen"], new["last_seen"]) == ("unknown", 208.0, 208.0)
    c = ingest.counters()
    assert (c.stored, c.duplicates, c.dead_lettered) == (3, 0, 0)


def test_a_batch_stores_each_event_once_and_opens_its_alert_once(writer):
    ingest, engine = writer
    call = ev("c1", 5, cue_name="call_manager", level=3)
    # the same call_manager twice in one batch (a QoS 1 redelivery), then again in the next
    send(ingest, [(*call, 300.0), (*ev("c1", 6), 300.5), (*call, 301.0)])
    send(ingest, [(*call, 302.0), (*ev("c1", 7), 303.0)])
    with engine.connect() as conn:
        stored = conn.execute(select(db.events.c.seq).order_by(db.events.c.seq)).scalars().all()
        alerts = conn.execute(select(db.alerts)).all()
        audit = conn.execute(select(db.alert_audit.c.action)).scalars().all()
    assert stored == [5, 6, 7]
    assert len(alerts) == 1 and alerts[0].kind == "call_manager"
    assert audit == ["opened"]
    c = ingest.counters()
    assert (c.stored, c.duplicates) == (3, 2)


def test_on_the_cluster_telemetry_does_not_set_the_status():
    """The cluster's telemetry has a queue of its own (docs/cluster.md), so a device's last
    telemetry may arrive after its LWT: there only status messages set the status."""
    from companion import schema
    from companion.cluster_ingest import ClusterIngest
    from companion.ingest import _device_changes

    fields = schema.Telemetry.from_dict({"agent": "1.0"})
    updates = [("status", ("s", "d", "offline", 10.0)), ("tele", ("s", "d", {}, fields, "{}", 11.0))]
    single, = _device_changes({("s", "d"): 11.0}, updates, Ingest.TELEMETRY_SETS_STATUS)
    cluster, = _device_changes({("s", "d"): 11.0}, updates, ClusterIngest.TELEMETRY_SETS_STATUS)
    assert (single["b_status"], single["b_firmware"]) == ("online", "1.0")
    assert (cluster["b_status"], cluster["b_status_at"], cluster["b_firmware"]) == ("offline", 10.0,
                                                                                  "1.0")
