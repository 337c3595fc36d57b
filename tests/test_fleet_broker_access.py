"""Per-device MQTT accounts and access rules, generated from the fleet registry and enforced by a
real Mosquitto: device A cannot publish as device B or read B's commands; the companion reads all."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from calmcue.broker import Mosquitto
from calmcue.shared import broker_access
from firmware.tools.fleet_client import DbFleet

SITE = "store-042"
A, B = "cc-00000000000a", "cc-00000000000b"


class Client:
    """A paho MQTT v5 client that records what it receives and the broker's reason codes."""

    def __init__(self, port: int, username: str | None, password: str | None):
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                             client_id=f"t-{username}-{time.monotonic_ns()}")
        if username:
            self.c.username_pw_set(username, password)
        self.received: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.connect_rc: ReasonCode | None = None
        self.acks: dict[int, list[ReasonCode]] = {}
        self.acked = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.received.append((m.topic, m.payload))
        self.c.on_publish = self._on_ack
        self.c.on_subscribe = self._on_sub
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_connect(self, c, u, flags, rc, props=None):
        self.connect_rc = rc
        self.connected.set()

    def _on_ack(self, c, u, mid, rc, props=None):
        with self.acked:
            self.acks[mid] = [rc]
            self.acked.notify_all()

    def _on_sub(self, c, u, mid, rcs, props=None):
        with self.acked:
            self.acks[mid] = list(rcs)
            self.acked.notify_all()

    def wait_ack(self, mid: int) -> list[ReasonCode]:
        with self.acked:
            assert self.acked.wait_for(lambda: mid in self.acks, timeout=5), "no ack from broker"
            return self.acks[mid]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> ReasonCode:
        info = self.c.publish(topic, payload, qos=1, retain=retain, properties=Properties(3))
        return self.wait_ack(info.mid)[0]

    def subscribe(self, topic: str) -> ReasonCode:
        _, mid = self.c.subscribe(topic, qos=1)
        return self.wait_ack(mid)[0]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def secured_broker(tmp_path: Path, monkeypatch):
    fleet = DbFleet(f"sqlite:///{tmp_path / 'fleet.db'}", key_path=tmp_path / "key.pem")
    creds = {
        "companion": fleet.mqtt_account(site=None, device=None, username="companion"),
        A: fleet.mqtt_account(site=SITE, device=A),
    }
    # B's hash computed here rather than by mosquitto_passwd: both forms must work
    monkeypatch.setattr(broker_access.shutil, "which", lambda name: None)
    creds[B] = fleet.mqtt_account(site=SITE, device=B)
    monkeypatch.undo()
    passwd, acl = broker_access.write_files(fleet.store.accounts(), tmp_path / "broker")
    assert "$7$" in passwd.read_text()
    broker = Mosquitto(
        workdir=tmp_path,
        # the test runs as root in a private 0700 tmp dir: keep mosquitto from dropping to its
        # own user, which could not read the files there (docs/fleet.md: chown for production)
        extra_conf=f"user root\nallow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n",
    ).start()
    clients: list[Client] = []

    def connect(user: str | None, password: str | None = None) -> Client:
        cl = Client(broker.port, user, password if password is not None else
                    (creds[user]["password"] if user else None))
        clients.append(cl)
        assert cl.connected.wait(5)
        return cl

    yield connect
    for cl in clients:
        cl.close()
    broker.close()


def _settle(client: Client, n: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while len(client.received) < n and time.monotonic() < deadline:
        time.sleep(0.02)


def test_device_publishes_only_as_itself(secured_broker):
    companion = secured_broker("companion")
    assert companion.subscribe("calmcue/v1/#").value < 128
    a = secured_broker(A)
    assert a.connect_rc is not None and a.connect_rc.value == 0

    own = f"calmcue/v1/{SITE}/{A}/evt/cue"
    as_b = f"calmcue/v1/{SITE}/{B}/evt/cue"
    other_site = f"calmcue/v1/store-999/{A}/evt/cue"
    assert a.publish(own, b"from-a").value == 0
    assert a.publish(as_b, b"a-pretending-to-be-b").getName() == "Not authorized"
    assert a.publish(other_site, b"a-elsewhere").getName() == "Not authorized"
    assert a.publish("calmcue/v1/store-042/alert/call_manager", b"fake").getName() == "Not authorized"
    _settle(companion, 1)
    time.sleep(0.3)  # anything wrongly let through would have arrived by now
    assert companion.received == [(own, b"from-a")]


def test_device_reads_only_its_own_config_and_commands(secured_broker):
    a = secured_broker(A)
    assert a.subscribe(f"calmcue/v1/{SITE}/{A}/config").value < 128
    assert a.subscribe(f"calmcue/v1/{SITE}/{A}/cmd/#").value < 128
    # Mosquitto 2 may grant a subscription and enforce read rules per delivered message, so
    # the test is what arrives, not the SUBACK
    a.subscribe(f"calmcue/v1/{SITE}/{B}/cmd/#")
    a.subscribe("calmcue/v1/#")
    companion = secured_broker("companion")
    assert companion.publish(f"calmcue/v1/{SITE}/{A}/config", b'{"rev":1}', retain=True).value == 0
    assert companion.publish(f"calmcue/v1/{SITE}/{B}/cmd/ota", b"for-b").value == 0
    assert companion.publish(f"calmcue/v1/{SITE}/{A}/cmd/ota", b"for-a").value == 0
    assert companion.publish(f"calmcue/v1/{SITE}/{B}/evt/cue", b"b-event").value == 0
    _settle(a, 2)
    time.sleep(0.3)
    # overlapping subscriptions may deliver a message once per match; none of B's arrive
    assert set(a.received) == {(f"calmcue/v1/{SITE}/{A}/cmd/ota", b"for-a"),
                               (f"calmcue/v1/{SITE}/{A}/config", b'{"rev":1}')}


def test_wrong_password_and_anonymous_are_refused(secured_broker):
    wrong = secured_broker(A, password="not-the-password")
    assert wrong.connect_rc is not None and wrong.connect_rc.value != 0
    anon = secured_broker(None)
    assert anon.connect_rc is not None and anon.connect_rc.value != 0


def test_acl_text_is_per_device():
    acct = broker_access.Account(A, "$7$x", SITE, A)
    text = broker_access.render_acl_file([acct, broker_access.Account("companion", "$7$y")])
    assert f"user {A}\ntopic write calmcue/v1/{SITE}/{A}/#\n" in text
    assert f"topic read calmcue/v1/{SITE}/{A}/config\ntopic read calmcue/v1/{SITE}/{A}/cmd/#" in text
    assert "user companion\ntopic readwrite calmcue/v1/#" in text


def test_generated_hash_matches_mosquitto_format():
    h = broker_access.hash_password("u", "secret", use_tool=False)
    assert h.startswith("$7$101$")
    assert broker_access.check_password(h, "secret")
    assert not broker_access.check_password(h, "Secret")
