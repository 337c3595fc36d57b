"""The agent's MQTT link (paho-mqtt): delivers the durable queue, reports health, takes orders.

One thread owns the connection and a fresh paho client per connection attempt, so nothing is
ever queued inside paho: the SQLite queue is the only outbox. Each queued event is published
with QoS 1 and its row is deleted only when its PUBACK arrives; after a disconnect every
unacknowledged row is published again, in order, on the next connection. Events queued while the
broker was away are therefore sent once each; an event in flight at the very moment the link
drops may arrive twice (QoS 1), which the companion absorbs by (device, boot, seq).

Topics (calmcue/v1/<site>/<device>/...): `status` retained online/offline (birth + LWT),
`tele` periodic health, `config` retained settings (subscribed), `cmd/<name>` commands
(subscribed), `state/result` command and config results.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from firmware.core import wire
from firmware.pi.config import MqttSettings
from firmware.pi.store import EventQueue

log = logging.getLogger("calmcue.agent.mqtt")

INFLIGHT = 20  # unacknowledged events on the wire at once


class Link:
    def __init__(
        self,
        settings: MqttSettings,
        site: str,
        device: str,
        queue: EventQueue,
        telemetry: Callable[[], dict[str, Any]],
        on_config: Callable[[Any], dict[str, Any]],
        on_command: Callable[[str, Any], dict[str, Any]],
    ):
        self.settings = settings
        self.site = site
        self.device = device
        self.queue = queue
        self.telemetry = telemetry
        self.on_config = on_config
        self.on_command = on_command
        self.connected = False
        self.connects = 0
        self.address = ""  # host:port of the node connected to, or last tried
        self.delivered = 0
        self._stop = threading.Event()
        self._kick = threading.Event()  # new event queued: publish now, not on the next tick
        self._inflight: dict[int, int] = {}  # paho mid -> queue row id
        self._last_sent = 0  # highest row id put on the wire on this connection
        self._thread: threading.Thread | None = None
        self._tele_due = 0.0
        self._client: mqtt.Client | None = None
        self._lock = threading.Lock()

    def topic(self, leaf: str) -> str:
        return wire.topic(self.site, self.device, leaf)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="calmcue-mqtt", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        self._kick.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread:
            self._thread.join(timeout)

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue.depth() == 0:
                return True
            time.sleep(0.02)
        return self.queue.depth() == 0

    # --- the connection loop -------------------------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"calmcue-{self.site}-{self.device}",
            clean_session=True,
        )
        if s.username:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            ctx = ssl.create_default_context(cafile=s.ca_file)
            if s.cert_file and s.key_file:
                ctx.load_cert_chain(s.cert_file, s.key_file)
            client.tls_set_context(ctx)
        client.will_set(self.topic("status"), b"offline", qos=1, retain=True)
        client.max_inflight_messages_set(INFLIGHT)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _run(self) -> None:
        backoff = self.settings.reconnect_min_s
        addresses = self.settings.addresses  # a clustered broker's nodes: fail over in turn
        node = 0
        while not self._stop.is_set():
            client = self._new_client()
            self._client = client
            with self._lock:
                self._inflight.clear()
                self._last_sent = 0
            host, port = addresses[node % len(addresses)]
            self.address = f"{host}:{port}"
            node += 1  # a failure below sends the next attempt to the next node
            try:
                client.connect(host, port, self.settings.keepalive_s)
            except (OSError, ValueError) as exc:  # refused, unreachable, TLS, bad host name
                log.warning(
                    "broker %s:%d unreachable (%s); events stay queued (%d), retry in %.1f s",
                    host,
                    port,
                    exc,
                    self.queue.depth(),
                    backoff,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max_s)
                continue
            rc = mqtt.MQTT_ERR_SUCCESS
            try:
                while not self._stop.is_set() and rc == mqtt.MQTT_ERR_SUCCESS:
                    rc = client.loop(timeout=0.02)
                    if self.connected:
                        backoff = self.settings.reconnect_min_s
                        if self._kick.is_set():  # new events, a freed slot, or a connect
                            self._pump(client)
                        self._tick(client)
            except Exception:  # a bug must not end delivery for good: log, drop, reconnect
                log.exception("MQTT link failed; reconnecting")
                rc = mqtt.MQTT_ERR_UNKNOWN
            if self._stop.is_set():
                self._close(client)
                return
            self.connected = False
            log.warning(
                "lost the broker (%s); reconnecting in %.1f s", mqtt.error_string(rc), backoff
            )
            client.disconnect()  # paho has dropped the socket; this clears its state for good
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.settings.reconnect_max_s)

    def _close(self, client: mqtt.Client) -> None:
        if self.connected:
            # A clean goodbye: deliver what is in flight, then say offline ourselves (the LWT
            # only fires on an unclean loss).
            deadline = time.monotonic() + 2.0
            while self._inflight and time.monotonic() < deadline:
                client.loop(timeout=0.02)
            info = client.publish(self.topic("status"), b"offline", qos=1, retain=True)
            deadline = time.monotonic() + 1.0
            while not info.is_published() and time.monotonic() < deadline:
                client.loop(timeout=0.02)
            client.disconnect()
            client.loop(timeout=0.05)
        self.connected = False

    def _pump(self, client: mqtt.Client) -> None:
        self._kick.clear()
        room = INFLIGHT - len(self._inflight)
        if room <= 0:
            return
        for ev in self.queue.peek(room, after_id=self._last_sent):
            info = client.publish(ev.topic, ev.payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return  # the loop will notice the broken connection
            with self._lock:
                self._inflight[info.mid] = ev.id
                self._last_sent = ev.id

    def _tick(self, client: mqtt.Client) -> None:
        now = time.monotonic()
        if now >= self._tele_due:
            self._tele_due = now + self.settings.telemetry_s
            self.publish_telemetry(client)

    def publish_telemetry(self, client: mqtt.Client | None = None) -> None:
        client = client or self._client
        if client is None or not self.connected:
            return
        try:
            body = json.dumps(self.telemetry(), separators=(",", ":"))
        except Exception:  # health reporting must never take the link down
            log.exception("telemetry failed")
            return
        client.publish(self.topic("tele"), body, qos=0)

    def request_telemetry(self) -> None:
        self._tele_due = 0.0

    # --- paho callbacks (run in this thread, inside client.loop) -------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.error(
                "broker %s refused the connection: %s; check mqtt.username/password and the ACL",
                self.settings.url,
                reason,
            )
            return
        self.connected = True
        self.connects += 1
        log.info(
            "connected to %s; %d queued event(s) to deliver", self.address, self.queue.depth()
        )
        client.publish(self.topic("status"), b"online", qos=1, retain=True)
        client.subscribe([(self.topic("config"), 1), (self.topic("cmd/+"), 1)])
        self._tele_due = 0.0
        self._kick.set()  # deliver the backlog

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected = False

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        with self._lock:
            row = self._inflight.pop(mid, None)
        if row is not None:
            self.queue.ack(row)
            self.delivered += 1
            self._kick.set()  # room for the next queued event

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        leaf = msg.topic[len(self.topic("")) :]
        try:
            payload: Any = json.loads(msg.payload) if msg.payload else None
        except ValueError:
            payload = msg.payload.decode(errors="replace")
        if leaf == "config" and payload is None:  # retained config cleared: keep what we run
            return
        if leaf != "config" and not leaf.startswith("cmd/"):
            return
        name = "config" if leaf == "config" else leaf[4:]
        try:
            if leaf == "config":
                result = {"cmd": name, **self.on_config(payload)}
            else:
                result = {"cmd": name, **self.on_command(name, payload)}
        except Exception as exc:  # report it to whoever sent it; the agent carries on
            log.exception("%s failed", leaf)
            result = {"cmd": name, "ok": False, "error": f"internal error: {exc}"}
        if leaf != "config" and isinstance(payload, dict) and "id" in payload:
            result["id"] = payload["id"]
        client.publish(self.topic("state/result"), json.dumps(result, separators=(",", ":")), qos=1)
        self.request_telemetry()
