"""Ingest from the clustered broker (docs/cluster.md): RabbitMQ nodes take the devices' MQTT and
route every event and status message into one durable quorum queue,
`calmcue.ingest`, replicated on every node. Each companion replica consumes that queue over
AMQP 0-9-1 (competing consumers: the broker's own shared subscription) and acknowledges each
message only after the transaction holding its row has committed, exactly as `Ingest` does over
MQTT (same validation, batching, dead letters and idempotent inserts: this class only replaces
the broker connection).

Telemetry is not in that queue: it goes to `calmcue.telemetry`, a transient classic queue
(not replicated, capped) that the replicas declare on the node they consume from and consume
the same way; when its node dies the broker cancels the replicas' consumers and each starts
over on the next node, declaring it there (telemetry sent meanwhile is dropped: the next one
comes within a minute).

A replica that dies leaves its unacknowledged messages to the broker, which delivers them to
the other replicas (the unique key makes a second delivery a counted duplicate). A node that
dies takes its connections along: the replica connects to the next node in `amqp_urls`; the
queue keeps working while two of its three members run.

Alerts go out over AMQP with publisher confirms through one node (`AlertPublisher`; the
cluster routes them to the managers' MQTT subscriptions on every node). Retained
configurations go out over MQTT through every node (`NodesPublisher`), because RabbitMQ 3.10
keeps retained messages per node and only takes them from MQTT publishers. (Alerts went over
MQTT first: when a node died, RabbitMQ 3.10's MQTT adapter on a surviving node closed the
companion's connection on a publisher nack, and paho sent the alert again: managers got it
twice.)
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt

from calmcue.shared import broker_access
from companion.config import MqttTarget, Settings
from companion.ingest import Ack, Ingest

log = logging.getLogger("calmcue.companion.cluster")
# pika logs every connect at INFO and a lost node as an ERROR with a traceback; the consumer
# says it once, in a line
logging.getLogger("pika").setLevel(logging.CRITICAL)

PREFETCH = 2000  # unacknowledged messages per replica: four batches in hand, no more
HEARTBEAT_S = 10  # a node that vanishes without a FIN is noticed within two of these


class NodesPublisher:
    """One MQTT client per node, for retained messages: through every connected node."""

    def __init__(self, targets: list[MqttTarget], client_id: str):
        self.clients: list[mqtt.Client] = []
        for i, target in enumerate(targets):
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{client_id}-pub{i + 1}")
            target.configure(c)
            c.reconnect_delay_set(min_delay=1, max_delay=10)
            c.on_connect = self._on_connect
            c.on_disconnect = self._on_disconnect
            c.connect_async(target.host, target.port, keepalive=15)
            self.clients.append(c)
        self._names = {id(c): f"{t.host}:{t.port}" for c, t in zip(self.clients, targets, strict=True)}

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        log.info("publishing through %s: %s", self._names.get(id(c)), rc)

    def _on_disconnect(self, c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        log.info("lost %s (%s)", self._names.get(id(c)), rc)

    def start(self) -> None:
        for c in self.clients:
            c.loop_start()

    def stop(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop_stop()

    def publish(self, topic: str, payload: bytes | str, *, retain: bool, wait_s: float) -> bool:
        """QoS 1. Retained: through every connected node (each keeps its own retained messages).
        Otherwise through the first connected node whose broker confirms it; the next one is
        tried only when that node went away before confirming."""
        live = [c for c in self.clients if c.is_connected()]
        if retain:
            infos = [c.publish(topic, payload, qos=1, retain=True) for c in live]
            return any(_confirmed(i, wait_s) for i in infos)
        for k, c in enumerate(live):
            info = c.publish(topic, payload, qos=1)
            log.info("%s through %s (mid %d)", topic, self._names.get(id(c)), info.mid)
            if _confirmed(info, wait_s) or c.is_connected():
                return True  # confirmed, or still connected: paho delivers it
            if k + 1 < len(live):
                log.warning("%s: its node went away before confirming; publishing through "
                            "another node", topic)  # fmt: skip
        return False


def _confirmed(info: mqtt.MQTTMessageInfo, wait_s: float) -> bool:
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        return False
    try:
        info.wait_for_publish(wait_s)
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


class AlertPublisher:
    """Alerts over AMQP with publisher confirms, through one node at a time (the cluster routes
    them to the managers' MQTT subscriptions on every node). A confirm means every queue that
    took it has it; a nack means a queue on a lost node did not, while the managers on the
    live nodes have it: not sent again (a second copy would reach them twice). Only a
    connection lost before the answer sends it again, through the next node."""

    def __init__(self, urls: list[str]):
        self.urls = urls
        self._node = 0
        self._lock = threading.Lock()
        self._conn: Any = None
        self._ch: Any = None

    def _channel(self) -> Any:
        import pika

        if self._ch is not None and self._ch.is_open:
            return self._ch
        self.close()
        params = pika.URLParameters(self.urls[self._node % len(self.urls)])
        params.heartbeat = 0  # idle between alerts; a dead node fails the next publish at once
        params.connection_attempts = 1
        params.socket_timeout = 5
        self._conn = pika.BlockingConnection(params)
        self._ch = self._conn.channel()
        self._ch.confirm_delivery()
        return self._ch

    def publish(self, topic: str, payload: bytes | str) -> bool:
        import pika

        body = payload.encode() if isinstance(payload, str) else payload
        props = pika.BasicProperties(delivery_mode=2)  # persistent: QoS 1 to MQTT subscribers
        with self._lock:
            for _attempt in range(2 * len(self.urls)):
                try:
                    self._channel().basic_publish(
                        "amq.topic", broker_access.routing_key(topic), body, props
                    )
                    return True
                except pika.exceptions.NackError:
                    log.warning("%s: a queue on a lost node did not take it; the managers "
                                "on the other nodes have it", topic)  # fmt: skip
                    return True
                except Exception as exc:  # the node went away: the next one
                    log.warning("%s: node %s failed (%s); publishing through the next", topic,
                                self._node % len(self.urls), exc.__class__.__name__)  # fmt: skip
                    self.close()
                    self._node += 1
            return False

    def close(self) -> None:
        conn, self._conn, self._ch = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:
                pass


class ClusterIngest(Ingest):
    """`Ingest` over the cluster's quorum queue; see the module docstring."""

    # telemetry comes through its own queue, so one sent before the device's LWT can arrive
    # after it: only status messages (retained `online`, the LWT) set the status
    TELEMETRY_SETS_STATUS = False

    def __init__(self, settings: Settings, engine: Any):
        super().__init__(settings, engine)
        self._urls = settings.amqp_url_list()
        self._conn: Any = None  # pika.BlockingConnection, owned by the consumer thread
        self._channel: Any = None
        self._consumer: threading.Thread | None = None
        self._closing = threading.Event()
        self._accepting = True
        self._node = 0
        self._publisher = NodesPublisher(settings.mqtt_targets(), settings.mqtt_client_id)
        self._alerts = AlertPublisher(self._urls)

    # ---- wiring ----------------------------------------------------------------------------

    def handle(self, topic_filter: str, handler: Any) -> None:
        """As `Ingest.handle`; the filter is bound to the ingest queue on the next connect."""
        self._handlers.append((topic_filter, handler))

    def publish(
        self, topic: str, payload: bytes | str, *, retain: bool = False, wait_s: float = 2.0
    ) -> bool:
        """Retained messages (configurations) over MQTT through every node; the rest (alerts,
        commands) over AMQP with confirms (AlertPublisher)."""
        if retain:
            return self._publisher.publish(topic, payload, retain=True, wait_s=wait_s)
        return self._alerts.publish(topic, payload)

    def publish_alert(self, topic: str, payload: bytes) -> bool:
        """For the alert outbox: True once a node confirmed (or nacked: see AlertPublisher)."""
        return self._alerts.publish(topic, payload)

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        from sqlalchemy import select

        from companion.db import devices

        with self.engine.connect() as conn:
            self._known = {
                (r.site, r.device) for r in conn.execute(select(devices.c.site, devices.c.device))
            }
        self._stopping.clear()
        self._closing.clear()
        self._accepting = True
        self._writer = threading.Thread(
            target=self._write_loop, name="calmcue-ingest-writer", daemon=True
        )
        self._writer.start()
        self._publisher.start()
        self._consumer = threading.Thread(
            target=self._consume_loop, name="calmcue-cluster-consumer", daemon=True
        )
        self._consumer.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Take no more deliveries, write and acknowledge what is queued, then disconnect: what
        was delivered but not written goes back to the queue for the other replicas."""
        self._accepting = False
        self._stopping.set()
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout)
            self._writer = None
        self._closing.set()
        if self._consumer is not None:
            self._consumer.join(timeout)
            self._consumer = None
        self._publisher.stop()
        self._alerts.close()

    # ---- the consumer thread ---------------------------------------------------------------

    def _consume_loop(self) -> None:
        import pika

        delay = 0.5
        while not self._closing.is_set():
            url = self._urls[self._node % len(self._urls)]
            params = pika.URLParameters(url)
            params.heartbeat = HEARTBEAT_S
            params.blocked_connection_timeout = 60
            params.connection_attempts = 1
            params.socket_timeout = 5
            where = f"{params.host}:{params.port}"
            conn = None
            try:
                conn = pika.BlockingConnection(params)
                ch = conn.channel()
                ch.queue_declare(
                    broker_access.INGEST_QUEUE, durable=True,
                    arguments={"x-queue-type": "quorum"},
                )  # fmt: skip
                filters = list(broker_access.INGEST_FILTERS) + [t for t, _h in self._handlers]
                for f in dict.fromkeys(filters):
                    ch.queue_bind(broker_access.INGEST_QUEUE, "amq.topic",
                                  broker_access.routing_key(f))  # fmt: skip
                # telemetry: its own transient queue, not the replicated one (a cluster set up
                # before keeps the binding to the quorum queue in its definitions: removed here)
                for f in broker_access.TELEMETRY_FILTERS:
                    ch.queue_unbind(broker_access.INGEST_QUEUE, "amq.topic",
                                    broker_access.routing_key(f))  # fmt: skip
                self._declare_telemetry(ch)
                ch.basic_qos(prefetch_count=PREFETCH)  # per consumer: each queue's own window
                cancelled = threading.Event()
                ch.add_on_cancel_callback(lambda _frame, ev=cancelled: ev.set())
                with self._ack_lock:
                    self._generation += 1
                    self._conn, self._channel = conn, ch
                ch.basic_consume(broker_access.INGEST_QUEUE, self._on_delivery)
                ch.basic_consume(broker_access.TELEMETRY_QUEUE, self._on_delivery)
                with self._lock:
                    self._counters.connected = self._counters.subscribed = True
                    self._counters.connects += 1
                log.info("ingest consuming %s on %s", broker_access.INGEST_QUEUE, where)
                delay = 0.5
                while not self._closing.is_set():
                    conn.process_data_events(time_limit=0.2)
                    if cancelled.is_set():
                        # the broker cancelled a consumer: the telemetry queue went with its
                        # node (or a queue was deleted). Start over on the next node, which
                        # declares it again; unacknowledged messages are delivered again.
                        raise RuntimeError("the broker cancelled a consumer")
            except Exception as exc:  # a node gone, refused, or the channel closed under us
                if not self._closing.is_set():
                    log.warning("cluster node %s: %s; trying the next node in %.1f s", where,
                                exc.__class__.__name__ + (f": {exc}" if str(exc) else ""),
                                delay)  # fmt: skip
            finally:
                with self._ack_lock:
                    self._generation += 1  # its delivery tags are void; the broker redelivers
                    self._conn = self._channel = None
                with self._lock:
                    self._counters.connected = self._counters.subscribed = False
                if conn is not None and conn.is_open:
                    try:
                        conn.close()
                    except Exception:
                        pass
            if not self._closing.is_set():
                self._node += 1
                self._closing.wait(delay)
                delay = min(delay * 2, 5.0)

    @staticmethod
    def _declare_telemetry(ch: Any) -> None:
        """The telemetry queue on the node `ch` is connected to (a transient classic queue is
        created on the node that declares it), bound to the telemetry topics; the same
        declaration from every replica, so they share one queue as competing consumers."""
        ch.queue_declare(broker_access.TELEMETRY_QUEUE, durable=False, auto_delete=False,
                         arguments=broker_access.TELEMETRY_ARGUMENTS)  # fmt: skip
        for f in broker_access.TELEMETRY_FILTERS:
            ch.queue_bind(broker_access.TELEMETRY_QUEUE, "amq.topic",
                          broker_access.routing_key(f))  # fmt: skip

    def _on_delivery(self, _ch: Any, method: Any, _props: Any, body: bytes) -> None:
        if not self._accepting:
            return  # left unacknowledged: back to the queue when we disconnect
        topic = broker_access.mqtt_topic(method.routing_key).encode()
        msg = mqtt.MQTTMessage(mid=method.delivery_tag, topic=topic)
        msg.payload = body
        msg.qos = 1
        self._on_message(None, None, msg)  # type: ignore[arg-type]

    def _ack(self, acks: list[Ack | None]) -> None:
        """Acknowledge on the consumer thread (pika is not thread-safe): each committed message
        of the current connection; tags of an earlier one are void (the broker redelivers)."""
        with self._ack_lock:
            conn, ch, gen = self._conn, self._channel, self._generation
        tags = [a[1] for a in acks if a is not None and a[0] == gen]
        if not tags or conn is None:
            return

        def send() -> None:
            try:
                for t in tags:
                    ch.basic_ack(t)
            except Exception as exc:  # the channel went away: the broker redelivers them
                log.warning("could not acknowledge %d messages: %s", len(tags), exc)

        try:
            conn.add_callback_threadsafe(send)
        except Exception:
            pass  # the connection is closing: redelivered to a replica

