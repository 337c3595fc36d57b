"""MQTT ingest: validate every message, write events in batches, keep what cannot be stored.

Two threads: paho's network thread classifies each message (valid event, device status,
telemetry, or a dead letter with the reason) and queues it; one writer thread drains the queue
in batches (every `ingest_batch_ms` or `ingest_batch_rows`) inside one transaction. Inserts are
idempotent on (site, device, boot, seq), so a redelivered QoS 1 message is stored once. Nothing
a device sends can crash the ingest: bad input becomes a dead letter and a counter.

Store, then acknowledge: the client runs with manual acks, and a QoS 1 message is acknowledged
to the broker only after the transaction holding its row (or its dead letter) has committed.
Until then the broker keeps it in the companion's persistent session and delivers it again
after a crash or reconnect (the unique key makes the second delivery a counted duplicate).

A batch the database refuses is written again row by row: a row the database refuses while
it answers everything else becomes a dead letter with the database's reason, every other row
is stored. While the database does not answer at all, nothing is acknowledged and the writer
retries with backoff.
"""

from __future__ import annotations

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
from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Float,
    String,
    Text,
    bindparam,
    case,
    false,
    func,
    insert,
    select,
    text,
    update,
)

from companion import replicas, schema
from companion.config import Settings
from companion.db import dead_letters, devices, events, insert_ignoring_duplicates

log = logging.getLogger("calmcue.companion.ingest")

SUBSCRIPTIONS = (
    f"{schema.TOPIC_ROOT}/+/+/evt/+",
    f"{schema.TOPIC_ROOT}/+/+/status",
    f"{schema.TOPIC_ROOT}/+/+/tele",
)
TELE_MAX_BYTES = schema.TELE_MAX_BYTES
QUEUE_MAX = 50_000
EVENT_COLUMNS = (
    "site", "device", "boot", "seq", "type", "up_ms", "ts", "conv", "cue", "level", "score",
    "conv_s", "stress_s", "ttd_s", "reason", "phase", "cues", "peak", "action",
)  # fmt: skip

EventListener = Callable[[list[dict[str, Any]]], None]
# inside the events' transaction; returns what to run after the commit (or None)
CommitHook = Callable[[Connection, list[dict[str, Any]]], Callable[[], None] | None]
DeviceListener = Callable[[str, str, str, dict[str, Any]], None]
# returns None when handled, or the reason to keep the message as a dead letter
MessageHandler = Callable[[str, bytes], "str | None"]
Ack = tuple[int, int, int]  # (connection generation, mid, qos)


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
    isolated: int = 0  # rows the database refused in a batch, kept as dead letters
    connected: bool = False
    subscribed: bool = False  # the broker confirmed our subscriptions on this connection
    queue_depth: int = 0


@dataclass
class _Item:
    """One queued message: what to write, where it came from, and how to acknowledge it."""

    kind: str  # event / dead / status / tele / barrier
    data: Any
    topic: str = ""
    payload: bytes = b""
    ack: Ack | None = None


@dataclass
class _Outcome:
    stored: list[dict[str, Any]]
    duplicates: int = 0
    dead: int = 0
    isolated: int = 0
    dev_updates: list[tuple[str, Any]] | None = None
    acks: list[Ack | None] | None = None


def _one_line(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:500]


class Ingest:
    """Subscribe, validate, store, acknowledge. `start()`/`stop()`; counters via `counters()`."""

    # a device whose telemetry arrives is online: true when telemetry and status messages come
    # through one subscription in the order the device sent them (not on the cluster, where
    # telemetry has a queue of its own and could arrive after the device's LWT)
    TELEMETRY_SETS_STATUS = True

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings
        self.engine = engine
        # Bounded: when storage falls this far behind, on_message blocks, paho stops reading,
        # and QoS 1 messages wait at the broker instead of in our memory.
        self._queue: queue.Queue[_Item | None] = queue.Queue(QUEUE_MAX)
        self._counters = IngestCounters()
        self._by_site: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._ack_lock = threading.Lock()
        self._generation = 0  # bumped on every (re)connect: a mid is only valid on its connection
        self._stopping = threading.Event()
        self._event_listeners: list[EventListener] = []
        self._commit_hooks: list[CommitHook] = []
        self._after_commit: list[Callable[[], None]] = []  # the writer thread's, from hooks
        self._device_listeners: list[DeviceListener] = []
        self._handlers: list[tuple[str, MessageHandler]] = []
        self._known: set[tuple[str, str]] = set()
        self._logged: dict[str, int] = {}
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

    def in_commit(self, hook: CommitHook) -> None:
        """`hook(conn, rows)` runs inside the transaction that stores new events, after them, so
        what it writes commits with them or not at all (alerts: companion/alerts.py); what it
        returns, if not None, runs after the commit and the event listeners."""
        self._commit_hooks.append(hook)

    def on_device(self, listener: DeviceListener) -> None:
        """`listener(site, device, what, fields)` after a status/telemetry update is stored."""
        self._device_listeners.append(listener)

    def handle(self, topic_filter: str, handler: MessageHandler) -> None:
        """Subscribe an extra topic (e.g. alert acknowledgements); `handler(topic, payload)` runs
        on the network thread, must not raise, and returns None when it handled the message or
        the reason it could not (the message then becomes a dead letter)."""
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

    def site_counters(self, sites: frozenset[str] | None = None) -> dict[str, dict[str, int]]:
        """Per-site stored / duplicates / dead_lettered (dead letters whose topic names a site),
        for the sites given (None = all)."""
        with self._lock:
            return {
                site: dict(c)
                for site, c in sorted(self._by_site.items())
                if sites is None or site in sites
            }

    def publish(
        self, topic: str, payload: bytes | str, *, retain: bool = False, wait_s: float = 2.0
    ) -> bool:
        """Publish (QoS 1) and wait up to `wait_s` for the broker's acknowledgement, so an API
        answer that says "published" means the broker holds it (a device subscribing next gets
        this retained config, not the one before). False when not connected (paho queues it for
        the reconnect). Called from request handlers, never from the MQTT network thread."""
        if self._client is None:
            return False
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        if wait_s > 0:
            try:
                info.wait_for_publish(wait_s)
            except (RuntimeError, ValueError):  # dropped from paho's queue: the reconnect resends
                pass
        return True

    def publish_alert(self, topic: str, payload: bytes) -> bool:
        """For the alert outbox (companion/alerts.py): True once paho holds the message (QoS 1
        on a persistent session: sent now, or from its queue after a reconnect), False when it
        could not take it (tried again later). With no broker configured nobody listens: True."""
        if self._client is None:
            return self.settings.mqtt_target() is None
        info = self._client.publish(topic, payload, qos=1)
        return info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        with self.engine.connect() as conn:
            self._known = {
                (r.site, r.device) for r in conn.execute(select(devices.c.site, devices.c.device))
            }
        self._stopping.clear()
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
            manual_ack=True,  # acknowledged after the commit, not on arrival
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
        """Write what is queued, acknowledge it, then disconnect. Whatever could not be written
        stays unacknowledged at the broker for the next start."""
        self._stopping.set()
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout)
            self._writer = None
        if self._client is not None:
            with self._ack_lock:
                client, self._client = self._client, None
            client.disconnect()
            client.loop_stop()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(_Item("barrier", done))
        return done.wait(timeout)

    def _log_limited(self, key: str, level: int, msg: str, *args: Any) -> None:
        """The first 20 of a kind, then every 1000th: a flood must not flood the log."""
        n = self._logged[key] = self._logged.get(key, 0) + 1
        if n <= 20 or n % 1000 == 0:
            log.log(level, f"{msg} (#%d)", *args, n)

    # ---- network thread --------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _ud: Any, _flags: Any, rc: Any, _props: Any = None
    ) -> None:
        if rc.is_failure:
            log.warning("MQTT connection refused: %s", rc)
            return
        with self._ack_lock:
            self._generation += 1
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
        with self._ack_lock:
            self._generation += 1  # mids of that connection are void; the broker resends
        with self._lock:
            self._counters.connected = False
            self._counters.subscribed = False
        if rc != 0:
            log.warning("MQTT connection lost (%s); reconnecting with backoff", rc)

    def _ack(self, acks: list[Ack | None]) -> None:
        """PUBACK each message whose row (or dead letter) is committed, in arrival order. A mid
        from an earlier connection is skipped: the broker delivers that message again."""
        with self._ack_lock:
            client = self._client
            if client is None:
                return
            for a in acks:
                if a is None or a[2] == 0 or a[0] != self._generation:
                    continue
                client.ack(a[1], a[2])

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        with self._ack_lock:
            ack: Ack = (self._generation, msg.mid, msg.qos)
        with self._lock:
            self._counters.received += 1
        payload = bytes(msg.payload)
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self._dead("<not utf-8>", payload, "topic is not valid UTF-8", now, ack)
            return
        try:
            self._classify(topic, payload, now, ack)
        except Exception as exc:  # never let one message take the ingest down
            self._log_limited(
                "internal", logging.ERROR, "ingest failed on a message from %s: %s",
                topic[:120], _one_line(exc),
            )  # fmt: skip
            self._dead(
                topic, payload, f"internal error while validating: {_one_line(exc)}", now, ack
            )

    def _classify(self, topic: str, payload: bytes, now: float, ack: Ack) -> None:
        parts = topic.split("/")
        for topic_filter, handler in self._handlers:
            if mqtt.topic_matches_sub(topic_filter, topic):
                reason = handler(topic, payload)
                if reason:
                    self._dead(topic, payload, reason, now, ack)
                else:
                    self._ack([ack])  # the handler committed its change
                return
        if len(parts) == 6 and parts[4] == "evt":
            self._classify_event(topic, parts[2], parts[3], parts[5], payload, now, ack)
        elif len(parts) == 5 and parts[4] == "status":
            self._classify_status(topic, parts[2], parts[3], payload, now, ack)
        elif len(parts) == 5 and parts[4] == "tele":
            self._classify_tele(topic, parts[2], parts[3], payload, now, ack)
        else:
            self._dead(topic, payload, "topic is not one calmcue ingests", now, ack)

    def _unknown(self, site: str, device: str) -> str | None:
        if (site, device) in self._known:
            return None
        if self.settings.auto_register_devices:
            # the same names the broker rules accept: a device called `alert` (or `+`, or
            # with a newline) is never registered, whatever broker it came through
            from calmcue.shared.broker_access import AccessError, check_device, check_site

            try:
                check_site(site)
                check_device(device)
            except AccessError as e:
                return f"not registered: {e}"
            return None
        return (
            f"device {site}/{device} is not registered; register it (IT: POST /api/devices) "
            "or set CALMCUE_AUTO_REGISTER_DEVICES=true"
        )

    def _classify_event(
        self,
        topic: str,
        site: str,
        device: str,
        etype: str,
        payload: bytes,
        now: float,
        ack: Ack,
    ) -> None:
        try:
            event = schema.parse_event(payload)
        except schema.EventRejected as exc:
            self._dead(topic, payload, exc.reason, now, ack)
            return
        if (event.site, event.device, event.type) != (site, device, etype):
            self._dead(
                topic,
                payload,
                f"topic says site={site} device={device} type={etype} but the payload says "
                f"site={event.site} device={event.device} type={event.type}",
                now,
                ack,
            )
            return
        reason = self._unknown(site, device)
        if reason:
            self._dead(topic, payload, reason, now, ack)
            return
        row = {c: getattr(event, c, None) for c in EVENT_COLUMNS}
        row["received_at"] = now
        self._enqueue(_Item("event", row, topic, payload, ack))

    def _device_problem(self, site: str, device: str) -> str | None:
        """Why a status/telemetry message cannot be attributed to a known device, if it cannot."""
        if not _ident_ok(site, device):
            return "site and device in the topic must be 1-32 chars of a-z, 0-9, _ or -"
        return self._unknown(site, device)

    def _classify_status(
        self, topic: str, site: str, device: str, payload: bytes, now: float, ack: Ack
    ) -> None:
        try:
            status = schema.parse_status(payload)
        except schema.EventRejected as exc:
            self._dead(topic, payload, exc.reason, now, ack)
            return
        reason = self._device_problem(site, device)
        if reason:
            self._dead(topic, payload, reason, now, ack)
            return
        self._enqueue(_Item("status", (site, device, status, now), topic, payload, ack))

    def _classify_tele(
        self, topic: str, site: str, device: str, payload: bytes, now: float, ack: Ack
    ) -> None:
        try:
            tele, fields, text_ = schema.parse_telemetry(payload)
        except schema.EventRejected as exc:
            self._dead(topic, payload, exc.reason, now, ack)
            return
        reason = self._device_problem(site, device)
        if reason:
            self._dead(topic, payload, reason, now, ack)
            return
        item = _Item("tele", (site, device, tele, fields, text_, now), topic, payload, ack)
        self._enqueue(item)

    def _enqueue(self, item: _Item) -> None:
        """Queue for the writer; blocks while the queue is full (paho stops reading, the broker
        holds the rest). When stopping, the message is left unacknowledged at the broker."""
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._stopping.is_set():
                    return

    def _dead_row(
        self, topic: str, payload: bytes | bytearray, reason: str, now: float
    ) -> dict[str, Any]:
        cap = self.settings.dead_letter_max_bytes
        return {
            "topic": topic[:256],
            "payload": bytes(payload[:cap]),
            "size": len(payload),
            "reason": reason[:2000],
            "received_at": now,
        }

    def _dead(
        self, topic: str, payload: bytes | bytearray, reason: str, now: float, ack: Ack | None
    ) -> None:
        self._log_limited("dead", logging.INFO, "dead letter from %s: %s", topic[:120], reason)
        self._enqueue(_Item("dead", self._dead_row(topic, payload, reason, now), topic, b"", ack))

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
            while len(batch) < max_rows and item.kind != "barrier":
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
                if nxt.kind == "barrier":
                    break
            try:
                self._write_batch(batch)
            except Exception as exc:  # the writer must outlive any one batch
                log.error("ingest writer failed on a batch of %d: %s", len(batch), _one_line(exc))

    def _write_batch(self, batch: list[_Item]) -> None:
        barriers = [i.data for i in batch if i.kind == "barrier"]
        work = [i for i in batch if i.kind != "barrier"]
        if work:
            try:
                outcome = self._store(work)
            except Exception as exc:
                with self._lock:
                    self._counters.write_errors += 1
                self._log_limited(
                    "batch", logging.WARNING,
                    "the database refused a batch of %d (%s); writing it row by row",
                    len(work), _one_line(exc),
                )  # fmt: skip
                outcome = self._store_row_by_row(work)
            self._finish(outcome)
        for b in barriers:
            b.set()

    def _finish(self, out: _Outcome) -> None:
        """After the commit: count, acknowledge, then tell the listeners."""
        with self._lock:
            c = self._counters
            c.batches += 1
            c.stored += len(out.stored)
            c.duplicates += out.duplicates
            c.dead_lettered += out.dead
            c.isolated += out.isolated
            c.device_updates += len(out.dev_updates or [])
            for r in out.stored:
                self._site(r["site"])["stored"] += 1
        self._ack(out.acks or [])
        if out.stored:
            for listener in self._event_listeners:
                try:
                    listener(out.stored)
                except Exception as exc:
                    log.error("event listener failed: %s", _one_line(exc))
        after, self._after_commit = self._after_commit, []
        for fn in after:
            try:
                fn()
            except Exception as exc:
                log.error("after-commit hook failed: %s", _one_line(exc))
        for kind, data in out.dev_updates or []:
            site, device = data[0], data[1]
            fields = {"status": data[2]} if kind == "status" else {"tele": data[2]}
            for dl in self._device_listeners:
                try:
                    dl(site, device, kind, fields)
                except Exception as exc:
                    log.error("device listener failed: %s", _one_line(exc))

    def _site(self, site: str) -> dict[str, int]:
        return self._by_site.setdefault(site, {"stored": 0, "duplicates": 0, "dead_lettered": 0})

    def _store_row_by_row(self, items: list[_Item]) -> _Outcome:
        total = _Outcome(stored=[], dev_updates=[], acks=[])
        for item in items:
            out = self._store_isolated(item)
            if out is None:
                continue  # stopping while the database is down: left to the broker, unacked
            total.stored.extend(out.stored)
            total.duplicates += out.duplicates
            total.dead += out.dead
            total.isolated += out.isolated
            total.dev_updates.extend(out.dev_updates or [])  # type: ignore[union-attr]
            total.acks.extend(out.acks or [])  # type: ignore[union-attr]
        return total

    def _db_answers(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def _store_isolated(self, item: _Item) -> _Outcome | None:
        """Store one message alone. Refused twice by a database that otherwise answers, it is
        poison: it becomes a dead letter with the database's reason. While the database does
        not answer, wait (nothing is acknowledged meanwhile); None when stopping meanwhile."""
        delay, refusals = 0.2, 0
        while True:
            try:
                return self._store([item])
            except Exception as exc:
                error = exc
            if self._db_answers():
                refusals += 1
                if refusals >= 2:
                    break
                time.sleep(0.05)  # a lock or a conflict clears; a bad row does not
                continue
            if self._stopping.is_set():
                return None
            self._log_limited(
                "db-down", logging.WARNING,
                "the database does not answer (%s); holding messages unacknowledged",
                _one_line(error),
            )  # fmt: skip
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        reason = f"the database refused it: {_one_line(error)}"
        self._log_limited("poison", logging.WARNING, "dead letter from %s: %s", item.topic, reason)
        if item.kind == "dead":  # the dead letter itself: keep a plain ASCII one
            row = dict(item.data)
            row["topic"] = _ascii(row["topic"])[:256]
            row["reason"] = _ascii(row["reason"])[:1000] + f" ({reason})"
        else:
            row = self._dead_row(_ascii(item.topic), item.payload, reason, time.time())
        try:
            out = self._store([_Item("dead", row, ack=item.ack)])
        except Exception as exc:
            with self._lock:
                self._counters.write_errors += 1
            log.error("could not keep a dead letter from %s either: %s", item.topic, _one_line(exc))
            return _Outcome(stored=[], acks=[item.ack])
        out.isolated = 1
        return out

    def _store(self, items: list[_Item]) -> _Outcome:
        """Write `items` in one transaction; raises if the database refuses any of it."""
        ev_rows: dict[tuple[str, str, int, int], dict[str, Any]] = {}
        dead_rows: list[dict[str, Any]] = []
        dev_updates: list[tuple[str, Any]] = []
        dupes = 0
        dup_sites: list[str] = []
        for it in items:
            if it.kind == "event":
                d = it.data
                key = (d["site"], d["device"], d["boot"], d["seq"])
                if key in ev_rows:
                    dupes += 1
                    dup_sites.append(d["site"])
                else:
                    ev_rows[key] = d
            elif it.kind == "dead":
                dead_rows.append(it.data)
            else:
                dev_updates.append((it.kind, it.data))
        stored = self._commit(list(ev_rows.values()), dead_rows, dev_updates)
        stored_keys = {(r["site"], r["device"], r["boot"], r["seq"]) for r in stored}
        dup_sites += [k[0] for k in ev_rows if k not in stored_keys]
        with self._lock:
            for site in dup_sites:
                self._site(site)["duplicates"] += 1
            for it in items:
                if it.kind == "dead":
                    named = _topic_site(it.data["topic"])
                    if named:
                        self._site(named)["dead_lettered"] += 1
        return _Outcome(
            stored=stored,
            duplicates=dupes + len(ev_rows) - len(stored),
            dead=len(dead_rows),
            dev_updates=dev_updates,
            acks=[it.ack for it in items],
        )

    def _commit(
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
            if stored and self.settings.replicated:
                replicas.notify(conn, self.replica, "e", [r["id"] for r in stored])
            if dead_rows:
                conn.execute(insert(dead_letters), dead_rows)
            # One statement per kind for the whole batch (executemany), not one per device: at
            # fleet scale building and running an UPDATE per device and per telemetry message
            # was what limited the writer (docs/fleet.md, "What limits it"). One order for every
            # replica, the devices sorted: new devices' rows first, then every update, so two
            # batches touching the same devices never deadlock.
            changes = _device_changes(seen, dev_updates, self.TELEMETRY_SETS_STATUS)
            new = [
                {"site": site, "device": device, "status": "unknown", "first_seen": t,
                 "last_seen": t, "silent": False}
                for (site, device), t in sorted(seen.items())
                if (site, device) not in self._known
            ]  # fmt: skip
            if new:
                conn.execute(self._insert_device, new)
            if changes:
                conn.execute(_DEVICE_UPDATE, changes)
            stored.sort(key=lambda r: r["id"])
            after = [hook(conn, stored) for hook in self._commit_hooks] if stored else []
        self._known.update(seen)
        self._after_commit.extend(fn for fn in after if fn is not None)
        return stored


# Everything a batch changes in one device's row, as one UPDATE executed for many devices: a
# NULL parameter keeps the column (every value the ingest writes there is non-NULL).
_DEVICE_UPDATE = (
    update(devices)
    .where(devices.c.site == bindparam("b_site"), devices.c.device == bindparam("b_device"))
    .values(
        last_seen=func.coalesce(bindparam("b_last_seen", type_=Float), devices.c.last_seen),
        silent=case((bindparam("b_alive", type_=Boolean), false()), else_=devices.c.silent),
        status=func.coalesce(bindparam("b_status", type_=String), devices.c.status),
        status_at=func.coalesce(bindparam("b_status_at", type_=Float), devices.c.status_at),
        tele=func.coalesce(bindparam("b_tele", type_=Text), devices.c.tele),
        tele_at=func.coalesce(bindparam("b_tele_at", type_=Float), devices.c.tele_at),
        firmware=func.coalesce(bindparam("b_firmware", type_=String), devices.c.firmware),
        model=func.coalesce(bindparam("b_model", type_=String), devices.c.model),
    )
)


def _device_changes(
    seen: dict[tuple[str, str], float],
    dev_updates: list[tuple[str, Any]],
    telemetry_sets_status: bool = True,
) -> list[dict[str, Any]]:
    """Parameters of `_DEVICE_UPDATE`, one per device, sorted: what the batch's messages leave in
    each row when applied in arrival order (the last status wins, whether from a status message
    or a reporting device's telemetry; the last telemetry; a firmware or model name only where a
    telemetry message carried one; `last_seen` from events and every message but an LWT)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(k: tuple[str, str]) -> dict[str, Any]:
        r = rows.get(k)
        if r is None:
            r = rows[k] = {"b_site": k[0], "b_device": k[1], "b_last_seen": seen.get(k),
                           "b_alive": k in seen, "b_status": None, "b_status_at": None,
                           "b_tele": None, "b_tele_at": None, "b_firmware": None,
                           "b_model": None}  # fmt: skip
        return r

    for k in seen:
        row(k)
    for kind, data in dev_updates:
        r = row((data[0], data[1]))
        if kind == "status":
            r["b_status"], r["b_status_at"] = data[2], data[3]
        else:
            fields: schema.Telemetry = data[3]
            r["b_tele"], r["b_tele_at"] = data[4], data[5]
            if fields.firmware is not None:
                r["b_firmware"] = fields.firmware
            if fields.model is not None:
                r["b_model"] = fields.model
            if fields.online and telemetry_sets_status:
                r["b_status"] = "online"  # a device that reports is online
    return [rows[k] for k in sorted(rows)]


def _ascii(s: str) -> str:
    return s.encode("ascii", "backslashreplace").decode("ascii")


def _topic_site(topic: str) -> str | None:
    parts = topic.split("/")
    if len(parts) >= 4 and "/".join(parts[:2]) == schema.TOPIC_ROOT and _ident_ok(parts[2]):
        return parts[2]
    return None


_IDENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def _ident_ok(*names: str) -> bool:
    return all(_IDENT.fullmatch(n) for n in names)
