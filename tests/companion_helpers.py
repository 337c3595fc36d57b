"""Helpers shared by the companion tests: a running companion against the test's Mosquitto, a
device-like publisher, and event builders."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from companion.config import Settings
from companion.faults import wait_until  # re-exported: the tests import it from here
from companion.server import RunningCompanion, start


def cue(
    site: str = "store-1",
    device: str = "counter-2",
    seq: int = 0,
    boot: int = 1,
    cue_name: str = "empathize",
    level: int = 2,
    score: float = 0.8,
    **extra: Any,
) -> dict[str, Any]:
    ev = {
        "v": 1,
        "type": "cue",
        "site": site,
        "device": device,
        "boot": boot,
        "seq": seq,
        "up_ms": 1000 + seq,
        "conv": "3fa9c2d1",
        "cue": cue_name,
        "level": level,
        "score": score,
        "conv_s": 12.5,
    }
    ev.update(extra)
    return ev


def topic_of(ev: dict[str, Any]) -> str:
    return f"calmcue/v1/{ev['site']}/{ev['device']}/evt/{ev['type']}"


class Publisher:
    """A plain MQTT client standing in for devices (QoS 1, waits for the broker's ack)."""

    def __init__(self, port: int):
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{time.monotonic_ns()}"
        )
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes | str | dict[str, Any], retain: bool = False) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def event(self, ev: dict[str, Any]) -> None:
        self.send(topic_of(ev), ev)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()




@contextmanager
def running_companion(
    db_url: str, mqtt_url: str | None, **overrides: Any
) -> Iterator[RunningCompanion]:
    fields: dict[str, Any] = {
        "env": "demo",
        "db_url": db_url,
        "mqtt_url": mqtt_url,
        "port": 0,
        "ingest_batch_ms": 20,
        "mqtt_client_id": f"companion-{time.monotonic_ns()}",
    }
    if db_url.startswith("sqlite:///"):  # the generated session secret goes beside the database
        fields["data_dir"] = Path(db_url.split("///", 1)[1]).parent
    fields.update(overrides)
    comp = start(Settings(**fields))
    try:
        if mqtt_url:
            wait_until(lambda: comp.ingest.counters().subscribed, 10, "the ingest to subscribe")
        yield comp
    finally:
        comp.stop()


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'companion.db'}"


@contextmanager
def fresh_pg_database(server: str, prefix: str = "companion") -> Iterator[str]:
    """A new, empty PostgreSQL database on `server` (a URL) for one test, dropped afterwards
    (connections still open to it included); yields its URL."""
    import uuid

    from sqlalchemy import create_engine

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


class Subscriber:
    """Records (time, topic, payload) of everything on `topic_filter` (managers' devices)."""

    def __init__(self, port: int, topic_filter: str):
        self.messages: list[tuple[float, str, dict[str, Any]]] = []
        self._ready = False
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{time.monotonic_ns()}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: setattr(self, "_ready", True)
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic_filter, qos=1)
        self.client.loop_start()
        wait_until(lambda: self._ready, what="the test subscription")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = {"raw": msg.payload.decode("utf-8", "replace")}
        self.messages.append((time.monotonic(), msg.topic, body))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
