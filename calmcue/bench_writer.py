"""The ingest writer alone, at fleet scale (`python -m calmcue.bench_writer`): how many events
per second the companion's writer stores when the messages come from many devices.

No broker and no simulator processes compete for the CPU: `--devices` simulated devices'
events and telemetry (calmcue/fleet_sim.py's payloads, one telemetry message per event as in
the field) are handed to the real `Ingest._on_message` (validation, queueing) as fast as the ingest's bounded queue takes them, and the writer thread stores them
with the alert manager's hook in its transactions, as `calmcue companion serve` wires it
(a `call_manager` cue opens its alert in its event's transaction). Before the timed part every
device has sent `online` and one telemetry message (as after a connect storm), so the devices
table is full.

Figures: events stored per second (and messages per second, events + telemetry) from the first
message handed over to the last commit, and this process's CPU seconds per 1,000 events (with
their telemetry), which other jobs on a shared machine change less than the rate. `--db` takes a PostgreSQL URL (default: a SQLite file
in a temporary folder).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt


def _messages(devices: int, events: int, seed: int = 7) -> tuple[list[tuple[str, bytes]], int]:
    """(topic, payload) in publish order: events and telemetry interleaved, devices round the
    fleet; and how many of them are events."""
    from calmcue.fleet_sim import DeviceSpec, SimDevice

    rnd = random.Random(seed)
    sims = [SimDevice(DeviceSpec(f"store-{i // 5:04d}", f"sim-{i:05d}"), boot=1)
            for i in range(devices)]  # fmt: skip
    out: list[tuple[str, bytes]] = []
    for _k in range(events):
        d = sims[rnd.randrange(devices)]
        out.append(d.next_event(rnd))
        t = sims[rnd.randrange(devices)]
        out.append((t.topic("tele"), t.telemetry()))
    warm = []
    for d in sims:
        warm.append((d.topic("status"), b"online"))
        warm.append((d.topic("tele"), d.telemetry()))
    return warm + out, len(warm)


def _msg(topic: str, payload: bytes, mid: int) -> mqtt.MQTTMessage:
    m = mqtt.MQTTMessage(mid=mid, topic=topic.encode())
    m.payload = payload
    m.qos = 1
    return m


def run(devices: int, events: int, db_url: str | None = None) -> dict[str, Any]:
    from companion import db
    from companion.alerts import AlertManager
    from companion.config import Settings
    from companion.ingest import Ingest

    with tempfile.TemporaryDirectory(prefix="calmcue-writer-") as tmp:
        url = db_url or f"sqlite:///{Path(tmp) / 'writer.db'}"
        settings = Settings(env="demo", db_url=url, mqtt_url=None, auto_register_devices=True,
                            data_dir=Path(tmp))  # fmt: skip
        engine = db.make_engine(url)
        db.migrate(engine)
        ingest = Ingest(settings, engine)
        manager = AlertManager(settings, engine, publish=lambda _t, _p: True,
                               notify=lambda _k, _i: None)  # fmt: skip
        ingest.in_commit(manager.open_with_events)
        ingest.on_events(lambda rows: None)
        msgs, n_warm = _messages(devices, events)
        ingest.start()
        try:
            for i, (topic, payload) in enumerate(msgs[:n_warm]):
                ingest._on_message(None, None, _msg(topic, payload, i + 1))  # type: ignore[arg-type]
            ingest.flush(600)
            base = ingest.counters()

            def feed() -> None:
                for i, (topic, payload) in enumerate(msgs[n_warm:]):
                    ingest._on_message(None, None, _msg(topic, payload, i + 1))  # type: ignore[arg-type]

            t0, cpu0 = time.perf_counter(), time.process_time()
            feed()
            ingest.flush(600)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            c = ingest.counters()
        finally:
            ingest.stop()
            engine.dispose()
    stored = c.stored - base.stored
    res = {
        "devices": devices,
        "db": url.split(":", 1)[0],
        "events": events,
        "stored": stored,
        "duplicates": c.duplicates - base.duplicates,
        "dead_letters": c.dead_lettered - base.dead_lettered,
        "batches": c.batches - base.batches,
        "seconds": round(wall, 2),
        "events_per_s": round(stored / wall, 1),
        "messages_per_s": round(2 * events / wall, 1),
        # this process's CPU (validation, writer, SQLite itself) per 1,000 events and their
        # telemetry: what a busy machine changes least
        "cpu_s_per_1000_events": round(1000 * cpu / max(stored, 1), 3),
    }
    print(f"writer: {devices} devices, {res['db']}: {stored}/{events} events stored in "
          f"{wall:.2f} s = {res['events_per_s']:,.0f} events/s "
          f"({res['messages_per_s']:,.0f} messages/s with telemetry), {res['batches']} batches, "
          f"{res['cpu_s_per_1000_events']} CPU s per 1,000 events")  # fmt: skip
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=5000)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--db", default=None, help="database URL (default: a SQLite file)")
    a = ap.parse_args(argv)
    return run(a.devices, a.events, a.db)


if __name__ == "__main__":
    main()
