"""Companion ingest against a real Mosquitto: store, deduplicate, dead-letter, reconnect, live."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from companion_helpers import Publisher, cue, running_companion, sqlite_url, topic_of, wait_until
from pydantic import ValidationError

from calmcue.broker import free_port
from companion.config import MqttTarget, Settings
from companion.server import start
from firmware.core import wire

pytest_plugins = ("companion_fixtures",)  # the db_url fixture: SQLite and PostgreSQL


@pytest.fixture
def comp(db_url, mosquitto):
    with running_companion(db_url, mosquitto.url, dead_letter_max_bytes=64) as c:
        yield c


@pytest.fixture
def pub(mosquitto):
    p = Publisher(mosquitto.port)
    yield p
    p.close()


def api(comp, path, **params):
    r = httpx.get(comp.url + path, params=params, timeout=5)
    r.raise_for_status()
    return r.json()


def test_valid_events_are_stored_and_listed_newest_first(comp, pub):
    for seq in range(5):
        pub.event(cue(seq=seq, score=0.5 + seq / 10))
    pub.event(cue(site="store-2", device="desk-1", seq=0, cue_name="call_manager", level=3))
    wait_until(lambda: comp.ingest.counters().stored == 6, what="6 stored events")

    got = api(comp, "/api/events")
    assert [(e["site"], e["seq"]) for e in got] == [("store-2", 0)] + [
        ("store-1", s) for s in (4, 3, 2, 1, 0)
    ]
    assert got[1]["cue"] == "empathize" and got[1]["score"] == pytest.approx(0.9)
    assert "stress_s" not in got[1]  # absent optional fields stay absent
    assert [e["seq"] for e in api(comp, "/api/events", site="store-1", limit=2, offset=1)] == [3, 2]
    assert [e["device"] for e in api(comp, "/api/events", site="store-2")] == ["desk-1"]
    devices = {(d["site"], d["device"]) for d in api(comp, "/api/devices")}
    assert devices == {("store-1", "counter-2"), ("store-2", "desk-1")}


def test_duplicates_are_stored_once(comp, pub):
    ev = cue(seq=7)
    for _ in range(3):
        pub.event(ev)
    pub.event(cue(seq=7, boot=2))  # same seq after a reboot is a different event
    wait_until(lambda: comp.ingest.counters().received == 4, what="4 received")
    comp.ingest.flush()
    c = comp.ingest.counters()
    assert (c.stored, c.duplicates, c.dead_lettered) == (2, 2, 0)
    assert sorted((e["boot"], e["seq"]) for e in api(comp, "/api/events")) == [(1, 7), (2, 7)]


def test_bad_input_becomes_dead_letters_with_reasons(comp, pub):
    t = "calmcue/v1/store-1/counter-2/evt/cue"
    pub.send(t, b"{not json")
    pub.send(t, cue(audio="UklGRg=="))  # privacy: unknown keys are refused
    pub.send(t, cue(level=9))
    pub.send(t, json.dumps(cue(reason="x" * 600)))  # oversized
    pub.send("calmcue/v1/store-9/counter-2/evt/cue", cue())  # topic/payload mismatch
    pub.send("calmcue/v1/store-1/counter-2/evt/button", cue())  # type mismatch
    pub.send("calmcue/v1/store-1/counter-2/status", b"sleepy")
    pub.send("calmcue/v1/store-1/counter-2/tele", b"[1, 2]")
    pub.send(t, b"\xff\xfe\x00binary")
    wait_until(lambda: comp.ingest.counters().dead_lettered == 9, what="9 dead letters")

    pub.event(cue(seq=1))  # the service keeps running and storing
    wait_until(lambda: comp.ingest.counters().stored == 1, what="the valid event after bad ones")

    dead = api(comp, "/api/dead-letters")
    assert len(dead) == 9
    reasons = [d["reason"] for d in reversed(dead)]
    assert "Invalid JSON" in reasons[0]
    assert "audio" in reasons[1] and "Extra inputs are not permitted" in reasons[1]
    assert "level" in reasons[2] and "less than or equal to 3" in reasons[2]
    assert "byte limit" in reasons[3]
    assert "topic says site=store-9" in reasons[4] and "payload says site=store-1" in reasons[4]
    assert "type=button" in reasons[5]
    assert "online" in reasons[6]
    assert "JSON object" in reasons[7]
    oversized = list(reversed(dead))[3]
    assert oversized["size"] > 600 and oversized["truncated"] and len(oversized["payload"]) <= 64
    assert api(comp, "/healthz")["ingest"]["dead_lettered"] == 9
    assert [e["seq"] for e in api(comp, "/api/events")] == [1]


def test_unknown_devices_are_dead_lettered_when_registration_is_required(tmp_path, mosquitto, pub):
    with running_companion(
        sqlite_url(tmp_path), mosquitto.url, auto_register_devices=False
    ) as comp:
        r = httpx.post(comp.url + "/api/devices", json={"site": "store-1", "device": "counter-1"})
        assert r.status_code == 201 and r.json()["status"] == "unknown"
        bad = httpx.post(comp.url + "/api/devices", json={"site": "Store 1", "device": "x"})
        assert bad.status_code == 422
        pub.event(cue(device="counter-1"))
        pub.event(cue(device="counter-9"))
        wait_until(lambda: comp.ingest.counters().received == 2, what="2 received")
        comp.ingest.flush()
        assert [e["device"] for e in api(comp, "/api/events")] == ["counter-1"]
        (dead,) = api(comp, "/api/dead-letters")
        assert "counter-9 is not registered" in dead["reason"]


def test_auto_registration_refuses_reserved_and_malformed_device_ids(tmp_path, mosquitto, pub):
    """A broker that lets anyone in (not the generated rules) must still not get a device called
    `alert` registered: the name means something else in the topic tree."""
    with running_companion(sqlite_url(tmp_path), mosquitto.url) as comp:
        pub.event(cue(device="counter-1"))
        pub.event(cue(device="alert"))
        pub.event(cue(device="Counter_X"))
        wait_until(lambda: comp.ingest.counters().received == 3, what="3 received")
        comp.ingest.flush()
        assert [e["device"] for e in api(comp, "/api/events")] == ["counter-1"]
        reasons = sorted(d["reason"] for d in api(comp, "/api/dead-letters"))
        assert len(reasons) == 2
        assert any("'alert' is a reserved topic word" in r for r in reasons)
        assert any(r.startswith("cue.device: String should match pattern") for r in reasons)


def test_ingest_reconnects_and_resubscribes_after_broker_restart(tmp_path, mosquitto):
    with running_companion(sqlite_url(tmp_path), mosquitto.url) as comp:
        _restart_broker_under(comp, mosquitto)


def _restart_broker_under(comp, mosquitto):
    pub = Publisher(mosquitto.port)
    pub.event(cue(seq=0))
    wait_until(lambda: comp.ingest.counters().stored == 1, what="first event")
    pub.close()
    mosquitto.restart()  # the connection drops; the ingest reconnects and subscribes again
    wait_until(
        lambda: comp.ingest.counters().connects >= 2 and comp.ingest.counters().subscribed,
        timeout=15,
        what="the ingest to reconnect and resubscribe",
    )
    pub = Publisher(mosquitto.port)
    pub.event(cue(seq=1))
    wait_until(lambda: comp.ingest.counters().stored == 2, what="event after the restart")
    pub.close()
    assert [e["seq"] for e in api(comp, "/api/events")] == [1, 0]
    assert api(comp, "/healthz")["mqtt_connected"] is True


def test_live_feed_delivers_new_events_within_a_second(comp, pub):
    got: list[tuple[dict, float]] = []
    opened = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", comp.url + "/api/stream", timeout=10) as r:
            kind = None
            for line in r.iter_lines():
                if line.startswith("retry: "):  # sent once the feed has subscribed this client
                    opened.set()
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "event":
                    got.append((json.loads(line[6:]), time.monotonic()))
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert opened.wait(10), "the stream did not open"
    sent = time.monotonic()
    pub.event(cue(seq=42, cue_name="call_manager", level=3))
    t.join(5)
    assert got, "no live event arrived"
    ev, at = got[0]
    assert (ev["seq"], ev["cue"]) == (42, "call_manager") and ev["id"] >= 1
    assert at - sent < 1.0


def test_dashboard_is_served_offline_and_says_demo_mode(comp):
    page = httpx.get(comp.url + "/").text
    assert "/static/app.js" in page and "http" not in page.replace("http-equiv", "")  # no CDN
    js = httpx.get(comp.url + "/static/app.js").text
    assert "EventSource" in js and "demo mode" in js
    assert api(comp, "/api/session")["mode"] == "demo"


def test_non_demo_modes_need_a_login(tmp_path):
    with running_companion(sqlite_url(tmp_path), None, env="development") as comp:
        r = httpx.get(comp.url + "/api/events")
        assert r.status_code == 401 and "log in" in r.json()["detail"]
        assert httpx.get(comp.url + "/healthz").status_code == 200


def test_settings_refuse_unsafe_or_malformed_values(monkeypatch):
    with pytest.raises(ValidationError, match="CALMCUE_SECRET_KEY"):
        Settings(env="production")
    assert Settings(env="production", secret_key="s" * 40).env == "production"
    with pytest.raises(ValidationError, match=r"mqtt://\[user"):
        Settings(mqtt_url="tcp://broker")
    assert MqttTarget.parse("mqtt://u:p%40ss@broker.local") == MqttTarget(
        "broker.local", 1883, "u", "p@ss"
    )
    monkeypatch.setenv("CALMCUE_RETENTION_DAYS", "7")
    monkeypatch.setenv("CALMCUE_ENV", "demo")
    s = Settings()
    assert (s.retention_days, s.env, s.secret_key) == (7, "demo", None)  # generated on start


def test_cli_serve_with_embedded_broker(tmp_path, mosquitto):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "calmcue.cli",
            "companion",
            "serve",
            "--db",
            sqlite_url(tmp_path),
            "--mqtt",
            "embedded",
            "--port",
            str(port),
            "--env",
            "demo",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        health = wait_until(lambda: _health(port), timeout=30, what="the CLI server")
        assert health["mqtt_connected"] is True
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=15)[0].decode()
    assert proc.returncode in (0, 130), out  # 130: stopped by Ctrl-C, as a person would
    assert "Traceback" not in out, out


def _health(port: int) -> dict | None:
    try:
        h = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
        return h if h.get("mqtt_connected") else None
    except httpx.HTTPError:
        return None


def test_topic_helper_matches_firmware():

    ev = cue()
    assert topic_of(ev) == wire.event_topic(ev)


def test_companion_starts_before_the_broker_and_connects_when_it_appears(tmp_path, mosquitto):
    mosquitto.stop()
    comp = start(
        Settings(env="demo", db_url=sqlite_url(tmp_path), mqtt_url=mosquitto.url, port=0,
                 mqtt_client_id="late-broker")
    )  # fmt: skip
    try:
        health = api(comp, "/healthz")
        assert health["status"] == "ok" and health["mqtt_connected"] is False
        mosquitto.start()
        wait_until(lambda: comp.ingest.counters().subscribed, timeout=15, what="a late connect")
        pub = Publisher(mosquitto.port)
        pub.event(cue(seq=3))
        wait_until(lambda: comp.ingest.counters().stored == 1, what="the event")
        pub.close()
    finally:
        comp.stop()
