"""Pi agent ↔ a real Mosquitto: events arrive, a broker outage loses and duplicates nothing,
status/telemetry/config/commands work."""

from __future__ import annotations

import json
import re

import pytest
from agent_support import (
    RunningAgent,
    Subscriber,
    agent_config,
    silence,
    speechlike,
    tiny_model,
    wait_until,
    write_wav,
)
from gpiozero.pins.mock import MockFactory, MockPWMPin

from companion.schema import parse_event
from firmware.pi.agent import Agent

BUTTON = 23


@pytest.fixture
def conversation_wav(tmp_path):
    parts = [
        silence(1),
        speechlike(4, False, 1),
        speechlike(10, True, 2),
        speechlike(4, False, 3),
        silence(8),
    ]
    return write_wav(tmp_path / "conversation.wav", parts)


@pytest.fixture
def quiet_wav(tmp_path):
    return write_wav(tmp_path / "quiet.wav", [silence(1)])


def press(factory: MockFactory, pin: int = BUTTON) -> None:
    p = factory.pin(pin)
    p.drive_low()
    p.drive_high()


def test_events_arrive_valid_and_in_order(mosquitto, tmp_path, conversation_wav):
    sub = Subscriber(mosquitto.port)
    try:
        cfg = agent_config(
            tmp_path,
            mosquitto.port,
            policy={"conversation_gap_s": 3.0, "stress_from_unknown": True},
            model={"path": str(tiny_model(tmp_path / "model"))},
        )
        agent = Agent(cfg, source=f"file:{conversation_wav}", realtime=False)
        assert agent.run() == 0  # a file source ends the run once its events are delivered
        sent = agent.stamper.seq
        assert agent.pipeline.scorer.model_id == "test-tiny"
        assert sent >= 3, "the conversation should start, cue and end"
        events = wait_until(lambda: len(sub.events()) >= sent and sub.events(), 5)
        assert [e["seq"] for e in events] == list(range(sent))
        for raw in sub.on("/evt/conversation") + sub.on("/evt/cue"):
            parse_event(raw)  # the companion accepts every one
        assert any(e["type"] == "cue" for e in events)
        phases = [e["phase"] for e in events if e["type"] == "conversation"]
        assert phases[0] == "start" and phases[-1] == "end"
        assert {e["boot"] for e in events} == {1}
        status = wait_until(lambda: sub.on("/status")[-1:] == [b"offline"] and sub.on("/status"), 5)
        assert status[0] == b"online" and status[-1] == b"offline"  # birth, then a clean goodbye
        tele = json.loads(sub.on("/tele")[0])
        for key in (
            "agent",
            "model",
            "model_hash",
            "uptime_s",
            "cpu_pct",
            "mem_kb",
            "mic_ok",
            "muted",
            "queue",
        ):
            assert key in tele, key
    finally:
        sub.close()


def test_broker_outage_every_queued_event_arrives_once_in_order(mosquitto, tmp_path, quiet_wav):
    # The broker keeps sessions across its restart (like a production broker), and the test
    # subscriber has a persistent session: so "arrives" means the agent delivered it.
    persist = tmp_path / "mqtt-db"
    persist.mkdir()
    mosquitto.extra_conf = (
        f"persistence true\npersistence_location {persist}/\nuser root\nlog_type debug\n"
    )
    mosquitto.restart()
    sub = Subscriber(mosquitto.port, persistent=True)
    factory = MockFactory(pin_class=MockPWMPin)
    cfg = agent_config(tmp_path, mosquitto.port, outputs={"enabled": True}, audio={"loop": True})
    agent = Agent(cfg, source=f"file:{quiet_wav}", realtime=True, pin_factory=factory)
    try:
        with RunningAgent(agent):
            assert wait_until(lambda: agent.link.connected, 5)
            for _ in range(5):
                press(factory)
            assert wait_until(lambda: len(sub.events()) == 5, 5)
            # let the subscriber's PUBACKs reach the broker, or it redelivers 'in-flight' copies
            wait_until(lambda: False, 0.3)
            mosquitto.stop()
            assert wait_until(lambda: not agent.link.connected, 5)
            for _ in range(40):
                press(factory)
            assert agent.queue.depth() == 40  # all 40 wait on disk
            mosquitto.start()
            got = wait_until(lambda: len(sub.events()) >= 45 and agent.queue.depth() == 0, 15)
            assert got, f"{len(sub.events())} of 45 events, {agent.queue.depth()} still queued"
            wait_until(lambda: False, 0.5)  # would-be duplicates have time to show up
        events = sub.events()
        assert [e["seq"] for e in events] == list(range(45))  # each once, in order
        assert all(e["type"] == "button" and e["action"] == "ack" for e in events)
        assert agent.link.connects >= 2
        # ...and from the broker's own point of view (its debug log of what it received):
        log = (mosquitto.workdir / "mosquitto.log").read_text()
        received = re.findall(
            r"Received PUBLISH from calmcue-store-1-counter-1 \((d\d), q1, r0, m\d+, "
            r"'calmcue/v1/store-1/counter-1/evt/button'", log)
        assert received == ["d0"] * 45  # 45 publishes, none a re-send
    finally:
        sub.close()


def test_commands_and_live_config(mosquitto, tmp_path, quiet_wav):
    sub = Subscriber(mosquitto.port)
    factory = MockFactory(pin_class=MockPWMPin)
    cfg = agent_config(tmp_path, mosquitto.port, outputs={"enabled": True}, audio={"loop": True})
    agent = Agent(cfg, source=f"file:{quiet_wav}", realtime=True, pin_factory=factory)
    base = "calmcue/v1/store-1/counter-1/"
    try:
        with RunningAgent(agent):
            assert wait_until(lambda: agent.link.connected, 5)

            def result(n):
                return wait_until(lambda: len(sub.on("/state/result")) >= n, 5) and json.loads(
                    sub.on("/state/result")[n - 1]
                )

            sub.client.publish(base + "cmd/mute", json.dumps({"id": "r1", "value": True}), qos=1)
            assert result(1) == {"cmd": "mute", "ok": True, "muted": True, "id": "r1"}
            assert agent.muted and agent.outputs.muted
            sub.client.publish(base + "cmd/led_brightness", json.dumps({"value": 0.2}), qos=1)
            assert result(2)["ok"] and agent.cfg.outputs.brightness == 0.2
            sub.client.publish(base + "cmd/sensitivity", "1.7", qos=1)
            bad = result(3)
            assert not bad["ok"] and "sensitivity" in bad["errors"][0]
            assert agent.cfg.sensitivity == 0.5  # refused: nothing applied
            sub.client.publish(base + "cmd/reboot", "{}", qos=1)
            assert "unknown command" in result(4)["error"]
            # retained config from the companion, applied live
            live = {"sensitivity": 0.8, "outputs": {"haptic_strength": 0.3}}
            sub.client.publish(base + "config", json.dumps(live), qos=1, retain=True)
            assert result(5) == {"cmd": "config", "ok": True, "applies": "now"}
            assert agent.cfg.sensitivity == 0.8 and agent.cfg.outputs.haptic_strength == 0.3
            assert agent.pipeline.policy.sensitivity == 0.8  # the policy runs with it
            sub.client.publish(
                base + "config", json.dumps({"mqtt": {"url": "mqtt://x:1"}}), qos=1, retain=True
            )
            refused = result(6)
            assert not refused["ok"] and "cannot be changed remotely" in refused["errors"][0]
            tele = wait_until(
                lambda: [json.loads(t) for t in sub.on("/tele") if json.loads(t)["muted"]], 5
            )
            assert tele and tele[-1]["mic_ok"] is True
        mutes = [e for e in sub.events() if e["type"] == "button"]
        assert [e["action"] for e in mutes] == ["mute"]
    finally:
        sub.close()


def test_a_failing_command_is_reported_and_the_link_carries_on(mosquitto, tmp_path, quiet_wav):
    sub = Subscriber(mosquitto.port)
    cfg = agent_config(tmp_path, mosquitto.port, audio={"loop": True})
    agent = Agent(cfg, source=f"file:{quiet_wav}", realtime=True)

    def broken(name, payload):
        raise RuntimeError("boom")

    agent.link.on_command = broken
    try:
        with RunningAgent(agent):
            assert wait_until(lambda: agent.link.connected, 5)
            sub.client.publish("calmcue/v1/store-1/counter-1/cmd/mute", '{"id": 7}', qos=1)
            res = wait_until(lambda: sub.on("/state/result"), 5)
            assert json.loads(res[0]) == {"cmd": "mute", "ok": False,
                                          "error": "internal error: boom", "id": 7}
            agent.emit("button", {"action": "ack"})
            assert wait_until(lambda: len(sub.events()) == 1, 5)  # still delivering
            assert agent.link.connects == 1
    finally:
        sub.close()


def test_the_agent_fails_over_between_the_nodes_of_a_clustered_broker(tmp_path, quiet_wav):
    """Issue 18 item 1: `mqtt.fallback_urls` lists a clustered broker's other nodes. The first
    address answers nothing, so the agent connects to the second; when that node goes away, it
    moves on to the third; every event arrives once, in order (two brokers stand in for nodes,
    bridged by one subscriber on each)."""
    from calmcue.broker import Mosquitto, free_port

    node2, node3 = Mosquitto(workdir=tmp_path / "n2").start(), Mosquitto(workdir=tmp_path / "n3")
    node3.start()
    subs = [Subscriber(node2.port), Subscriber(node3.port)]
    factory = MockFactory(pin_class=MockPWMPin)
    dead = free_port()  # nothing listens here: a node that is down
    cfg = agent_config(tmp_path, dead, outputs={"enabled": True}, audio={"loop": True},
                       mqtt={"fallback_urls": [f"mqtt://127.0.0.1:{node2.port}",
                                               f"mqtt://127.0.0.1:{node3.port}"]})  # fmt: skip
    agent = Agent(cfg, source=f"file:{quiet_wav}", realtime=True, pin_factory=factory)
    try:
        with RunningAgent(agent):
            assert wait_until(lambda: agent.link.connected, 5)
            assert agent.link.address == f"127.0.0.1:{node2.port}"
            for _ in range(5):
                press(factory)
            assert wait_until(lambda: len(subs[0].events()) == 5, 5)
            node2.stop()  # this node goes away: on to the next address
            for _ in range(5):
                press(factory)
            assert wait_until(lambda: len(subs[1].events()) >= 5 and agent.queue.depth() == 0, 10)
            assert agent.link.address == f"127.0.0.1:{node3.port}"
        seqs = [e["seq"] for e in subs[0].events()] + [e["seq"] for e in subs[1].events()]
        assert seqs == list(range(10))
    finally:
        for s in subs:
            s.close()
        node2.close()
        node3.close()


def test_fallback_urls_are_checked_like_the_url(tmp_path):
    from firmware.pi.config import ConfigError, build

    base = agent_config(tmp_path, 1883)
    for bad, words in (
        (["mqtts://node2:8883"], "same scheme"),
        (["node2:1883"], "same scheme"),
        (["mqtt://u:p@node2:1883"], "credentials"),
        ("mqtt://node2:1883", "must be a list"),
    ):
        cfg = {**base, "mqtt": {**base["mqtt"], "fallback_urls": bad}}
        with pytest.raises(ConfigError, match=words):
            build(cfg)
