"""MQTT ingest: validate every message, write events in batches, keep what cannot be stored.

Two threads: paho's network thread classifies each message (valid event, device status,
telemetry, or a dead letter with the reason) and queues it; one writer thread drains the queue
in batches (every `ingest_batch_ms` or `ingest_batch_rows`) inside one transaction. Inserts are
idempotent on (site, device, boot, seq), so a redelivered QoS 1 message is stored once. Nothing
a device sends can crash the ingest: bad input becomes a dead letter and a counter.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import Engine, insert, select, update

from companion import replicas, schema
from companion.config import Settings
from companion.db import dead_letters, devices, events

log = logging.getLogger("calmcue.companion.ingest")

SUBSCRIPTIONS = (
    f"{schema.TOPIC_ROOT}/+/+/evt/+",
    f"{schema.TOPIC_ROOT}/+/+/status",
    f"{schema.TOPIC_ROOT}/+/+/tele",
)
TELE_MAX_BYTES = 1024
QUEUE_MAX = 50_000
EVENT_COLUMNS = (
    "site", "device", "boot", "seq", "type", "up_ms", "ts", "conv", "cue", "level", "score",
    "conv_s", "stress_s", "ttd_s", "reason", "phase", "cues", "peak", "action",
)  # fmt: skip

EventListener = Callable[[list[dict[str, Any]]], None]
DeviceListener = Callable[[str, str, str, dict[str, Any]], None]
MessageHandler = Callable[[str, bytes], None]


@dataclass
class IngestCounters:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    device_updates: int = 0
    batches: int = 0
    write_errors: int = 0
    connects: int = 0
    connected: bool = False
    subscribed: bool = False  # the broker confirmed our subscriptions on this connection
    queue_depth: int = 0


def insert_ignoring_duplicates(engine: Engine, table: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING in the engine's dialect."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    raise RuntimeError(f"unsupported database {engine.dialect.name!r}: use SQLite or PostgreSQL")


class Ingest:
    """Subscribe, validate, store. `start()`/`stop()`; counters via `counters()`."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings
        self.engine = engine
        # Bounded: when storage falls this far behind, on_message blocks, paho stops reading,
        # and QoS 1 messages wait at the broker instead of in our memory.
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(QUEUE_MAX)
        self._counters = IngestCounters()
        self._lock = threading.Lock()
        self._event_listeners: list[EventListener] = []
        self._device_listeners: list[DeviceListener] = []
        self._handlers: list[tuple[str, MessageHandler]] = []
        self._known: set[tuple[str, str]] = set()
        self._dead_logged = 0
        self.replica = uuid.uuid4().hex[:12]  # tells our own NOTIFYs from other replicas'
        self._prefix = f"$share/{settings.mqtt_shared_group}/" if settings.mqtt_shared_group else ""
        self._writer: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._insert_events = insert_ignoring_duplicates(engine, events).returning(
            events.c.id, events.c.site, events.c.device, events.c.boot, events.c.seq
        )
        self._insert_device = insert_ignoring_duplicates(engine, devices)

    # ---- wiring ----------------------------------------------------------------------------

    def on_events(self, listener: EventListener) -> None:
        """`listener(rows)` runs on the writer thread after each commit with the newly stored
        events (duplicates excluded), oldest first."""
        self._event_listeners.append(listener)

    def on_device(self, listener: DeviceListener) -> None:
        """`listener(site, device, what, fields)` after a status/telemetry update is stored."""
        self._device_listeners.append(listener)

    def handle(self, topic_filter: str, handler: MessageHandler) -> None:
        """Subscribe an extra topic (e.g. alert acknowledgements); `handler(topic, payload)` runs
        on the network thread and must not raise."""
        self._handlers.append((topic_filter, handler))
        if self._client is not None and self._counters.connected:
            self._client.subscribe(self._prefix + topic_filter, qos=1)

    def register_device(self, site: str, device: str) -> None:
        self._known.add((site, device))

    def counters(self) -> IngestCounters:
        with self._lock:
            snap = IngestCounters(**asdict(self._counters))
        snap.queue_depth = self._queue.qsize()
        return snap

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> bool:
        """Publish (QoS 1); False when not connected (paho queues it for the reconnect)."""
        if self._client is None:
            return False
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        with self.engine.connect() as conn:
            self._known = {
                (r.site, r.device) for r in conn.execute(select(devices.c.site, devices.c.device))
            }
        self._writer = threading.Thread(
            target=self._write_loop, name="calmcue-ingest-writer", daemon=True
        )
        self._writer.start()
        target = self.settings.mqtt_target()
        if target is None:
            log.info("no MQTT broker configured; ingest is idle")
            return
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.settings.mqtt_client_id,
            clean_session=False,  # the broker keeps QoS 1 events for us while we reconnect
        )
        target.configure(client)  # credentials, and TLS with a checked certificate for mqtts://
        client.reconnect_delay_set(min_delay=1, max_delay=10)  # paho backs off, doubling
        client.max_queued_messages_set(10000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = lambda _c, _ud: log.warning(
            "cannot reach the MQTT broker at %s:%d; retrying with backoff "
            "(is it running? check --mqtt / CALMCUE_MQTT_URL)",
            target.host,
            target.port,
        )
        self._client = client
        client.connect_async(target.host, target.port, keepalive=30)
        client.loop_start()  # network thread; reconnects with backoff on its own
        log.info("ingest connecting to %s", target.url)

    def stop(self, timeout: float = 10.0) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout)
            self._writer = None

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(("barrier", done))
        return done.wait(timeout)

    # ---- network thread --------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _props: Any = None
    ) -> None:
        if rc.is_failure:
            log.warning("MQTT connection refused: %s", rc)
            return
        with self._lock:
            self._counters.connected = True
            self._counters.connects += 1
        # Subscribing here (not once after connect) brings the subscriptions back after every
        # reconnect, even when the broker lost the session.
        filters = list(SUBSCRIPTIONS) + [t for t, _h in self._handlers]
        client.subscribe([(self._prefix + t, 1) for t in filters])
        log.info("ingest connected; subscribed to %s", ", ".join(self._prefix + t for t in filters))

    def _on_subscribe(
        self, _c: mqtt.Client, _ud: Any, _mid: int, codes: Any, _props: Any = None
    ) -> None:
        if any(c.is_failure for c in codes):
            log.error("the broker refused a subscription: %s", codes)
        with self._lock:
            self._counters.subscribed = True

    def _on_disconnect(
        self, _c: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _props: Any = None
    ) -> None:
        with self._lock:
            self._counters.connected = False
            self._counters.subscribed = False
        if rc != 0:
            log.warning("MQTT connection lost (%s); reconnecting with backoff", rc)

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        with self._lock:
            self._counters.received += 1
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self._dead("<not utf-8>", msg.payload, "topic is not valid UTF-8", now)
            return
        try:
            self._classify(topic, bytes(msg.payload), now)
        except Exception as exc:  # never let one message take the ingest down
            log.exception("ingest failed on a message from %s", topic)
            self._dead(topic, msg.payload, f"internal error while validating: {exc!r}", now)

    def _classify(self, topic: str, payload: bytes, now: float) -> None:
        parts = topic.split("/")
        for topic_filter, handler in self._handlers:
            if mqtt.topic_matches_sub(topic_filter, topic):
                handler(topic, payload)
                return
        if len(parts) == 6 and parts[4] == "evt":
            self._classify_event(topic, parts[2], parts[3], parts[5], payload, now)
        elif len(parts) == 5 and parts[4] == "status":
            self._classify_status(topic, parts[2], parts[3], payload, now)
        elif len(parts) == 5 and parts[4] == "tele":
            self._classify_tele(topic, parts[2], parts[3], payload, now)
        else:
            self._dead(topic, payload, "topic is not one calmcue ingests", now)

    def _unknown(self, site: str, device: str) -> str | None:
        if self.settings.auto_register_devices or (site, device) in self._known:
            return None
        return (
            f"device {site}/{device} is not registered; register it (IT: POST /api/devices) "
            "or set CALMCUE_AUTO_REGISTER_DEVICES=true"
        )

    def _classify_event(
        self, topic: str, site: str, device: str, etype: str, payload: bytes, now: float
    ) -> None:
        try:
            event = schema.parse_event(payload)
        except schema.EventRejected as exc:
            self._dead(topic, payload, exc.reason, now)
            return
        if (event.site, event.device, event.type) != (site, device, etype):
            self._dead(
                topic,
                payload,
                f"topic says site={site} device={device} type={etype} but the payload says "
                f"site={event.site} device={event.device} type={event.type}",
                now,
            )
            return
        reason = self._unknown(site, device)
        if reason:
            self._dead(topic, payload, reason, now)
            return
        row = {c: getattr(event, c, None) for c in EVENT_COLUMNS}
        row["received_at"] = now
        self._queue.put(("event", row))

    def _device_problem(self, site: str, device: str) -> str | None:
        """Why a status/telemetry message cannot be attributed to a known device, if it cannot."""
        if not _ident_ok(site, device):
            return "site and device in the topic must be 1-32 chars of a-z, 0-9, _ or -"
        return self._unknown(site, device)

    def _classify_status(
        self, topic: str, site: str, device: str, payload: bytes, now: float
    ) -> None:
        status = payload.strip().decode("utf-8", "replace")
        if status not in ("online", "offline"):
            self._dead(topic, payload, "status must be 'online' or 'offline'", now)
            return
        reason = self._device_problem(site, device)
        if reason:
            self._dead(topic, payload, reason, now)
            return
        self._queue.put(("status", (site, device, status, now)))

    def _classify_tele(
        self, topic: str, site: str, device: str, payload: bytes, now: float
    ) -> None:
        if len(payload) > TELE_MAX_BYTES:
            self._dead(
                topic,
                payload,
                f"telemetry is {len(payload)} bytes, over the {TELE_MAX_BYTES} byte limit",
                now,
            )
            return
        try:
            tele = json.loads(payload)
        except ValueError:
            self._dead(topic, payload, "telemetry is not valid JSON", now)
            return
        if not isinstance(tele, dict):
            self._dead(topic, payload, "telemetry must be a JSON object", now)
            return
        reason = self._device_problem(site, device)
        if reason:
            self._dead(topic, payload, reason, now)
            return
        self._queue.put(("tele", (site, device, tele, payload.decode("utf-8", "replace"), now)))

    def _dead(self, topic: str, payload: bytes | bytearray, reason: str, now: float) -> None:
        cap = self.settings.dead_letter_max_bytes
        row = {
            "topic": topic[:256],
            "payload": bytes(payload[:cap]),
            "size": len(payload),
            "reason": reason[:2000],
            "received_at": now,
        }
        self._dead_logged += 1
        if (
            self._dead_logged <= 20 or self._dead_logged % 1000 == 0
        ):  # a flood must not flood the log
            log.info("dead letter #%d from %s: %s", self._dead_logged, topic, reason)
        self._queue.put(("dead", row))

    # ---- writer thread ---------------------------------------------------------------------

    def _write_loop(self) -> None:
        max_rows = self.settings.ingest_batch_rows
        max_wait = self.settings.ingest_batch_ms / 1000.0
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            deadline = time.monotonic() + max_wait
            while len(batch) < max_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
                if nxt[0] == "barrier":
                    break
            try:
                self._write_batch(batch)
            except Exception:  # the writer must outlive any one batch
                log.exception("ingest writer failed on a batch of %d; continuing", len(batch))

    def _write_batch(self, batch: list[tuple[str, Any]]) -> None:
        ev_rows: dict[tuple[str, str, int, int], dict[str, Any]] = {}
        dead_rows: list[dict[str, Any]] = []
        dev_updates: list[tuple[str, Any]] = []
        barriers: list[threading.Event] = []
        in_batch_dupes = 0
        for kind, data in batch:
            if kind == "event":
                key = (data["site"], data["device"], data["boot"], data["seq"])
                if key in ev_rows:
                    in_batch_dupes += 1
                else:
                    ev_rows[key] = data
            elif kind == "dead":
                dead_rows.append(data)
            elif kind == "barrier":
                barriers.append(data)
            else:
                dev_updates.append((kind, data))
        stored: list[dict[str, Any]] = []
        for attempt in range(5):
            try:
                stored = self._store(list(ev_rows.values()), dead_rows, dev_updates)
                break
            except Exception:
                with self._lock:
                    self._counters.write_errors += 1
                log.exception("ingest write failed (attempt %d of 5); retrying", attempt + 1)
                time.sleep(0.2 * 2**attempt)
        else:
            log.error("dropping a batch of %d messages after 5 failed writes", len(batch))
        with self._lock:
            c = self._counters
            c.batches += 1
            c.stored += len(stored)
            c.duplicates += len(ev_rows) - len(stored) + in_batch_dupes
            c.dead_lettered += len(dead_rows)
            c.device_updates += len(dev_updates)
        if stored:
            for listener in self._event_listeners:
                try:
                    listener(stored)
                except Exception:
                    log.exception("event listener failed")
        for kind, data in dev_updates:
            site, device = data[0], data[1]
            fields = {"status": data[2]} if kind == "status" else {"tele": data[2]}
            for dl in self._device_listeners:
                try:
                    dl(site, device, kind, fields)
                except Exception:
                    log.exception("device listener failed")
        for b in barriers:
            b.set()

    def _store(
        self,
        ev_rows: list[dict[str, Any]],
        dead_rows: list[dict[str, Any]],
        dev_updates: list[tuple[str, Any]],
    ) -> list[dict[str, Any]]:
        stored: list[dict[str, Any]] = []
        seen: dict[tuple[str, str], float] = {}
        for r in ev_rows:
            k = (r["site"], r["device"])
            seen[k] = max(seen.get(k, 0.0), r["received_at"])
        for kind, data in dev_updates:
            if kind == "status" and data[2] == "offline":
                continue  # the broker's LWT says the device is gone: not a sign of life
            k = (data[0], data[1])
            seen[k] = max(seen.get(k, 0.0), data[-1])
        with self.engine.begin() as conn:
            if ev_rows:
                by_key = {(r["site"], r["device"], r["boot"], r["seq"]): r for r in ev_rows}
                for row in conn.execute(self._insert_events, ev_rows):
                    stored_row = dict(by_key[(row.site, row.device, row.boot, row.seq)])
                    stored_row["id"] = row.id
                    stored.append(stored_row)
            if stored and self.settings.mqtt_shared_group:
                replicas.notify(conn, self.replica, "e", [r["id"] for r in stored])
            if dead_rows:
                conn.execute(insert(dead_letters), dead_rows)
            for (site, device), t in seen.items():
                if (site, device) not in self._known:
                    conn.execute(
                        self._insert_device,
                        {
                            "site": site,
                            "device": device,
                            "status": "unknown",
                            "first_seen": t,
                            "last_seen": t,
                            "silent": False,
                        },
                    )
                conn.execute(
                    update(devices)
                    .where(devices.c.site == site, devices.c.device == device)
                    .values(last_seen=t, silent=False)
                )
            for kind, data in dev_updates:
                where = (devices.c.site == data[0], devices.c.device == data[1])
                if kind == "status":
                    conn.execute(
                        update(devices).where(*where).values(status=data[2], status_at=data[3])
                    )
                else:
                    tele = data[2]
                    values: dict[str, Any] = {"tele": data[3], "tele_at": data[4]}
                    # ESP32 firmware says "fw", the Pi agent "agent"
                    for col, keys in (
                        ("firmware", ("fw", "agent", "firmware")),
                        ("model", ("model",)),
                    ):
                        v = next((tele[k] for k in keys if tele.get(k) is not None), None)
                        if isinstance(v, dict):  # {"model": {"id": ..., "hash": ...}}
                            v = v.get("id")
                        if v is not None:
                            values[col] = str(v)[:64]
                    if tele.get("online") is not False:
                        values["status"] = "online"  # a device that reports is online
                    conn.execute(update(devices).where(*where).values(**values))
        self._known.update(seen)
        stored.sort(key=lambda r: r["id"])
        return stored


_IDENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def _ident_ok(*names: str) -> bool:
    return all(_IDENT.fullmatch(n) for n in names)
