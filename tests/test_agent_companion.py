"""Pi agent → real Mosquitto → companion: what the device sends is what the companion stores,
including the backlog of a broker outage, with nothing duplicated; and the config payload the
companion renders for a Pi is one the agent accepts and applies."""

from __future__ import annotations

import httpx
from agent_support import (
    RunningAgent,
    agent_config,
    silence,
    speechlike,
    tiny_model,
    wait_until,
    write_wav,
)
from companion_helpers import running_companion, sqlite_url


def stored(comp) -> list[dict]:
    r = httpx.get(comp.url + "/api/events", params={"device": "counter-1", "limit": 500}, timeout=5)
    r.raise_for_status()
    return [e for e in r.json() if e["device"] == "counter-1"]


def test_the_companion_stores_every_agent_event_once(mosquitto, tmp_path):
    from firmware.pi.agent import Agent

    talk = write_wav(tmp_path / "talk.wav", [silence(0.5), speechlike(3, False, 1),
                                             speechlike(6, True, 2), silence(4)])
    cfg = agent_config(
        tmp_path, mosquitto.port,
        policy={"conversation_gap_s": 2.0, "stress_from_unknown": True},
        model={"path": str(tiny_model(tmp_path / "model"))},
    )
    # Like a production broker, this one keeps the companion's (persistent) session across its
    # restart, so what the agent delivers after the outage is there for the companion.
    persist = tmp_path / "mqtt-db"
    persist.mkdir()
    mosquitto.extra_conf = f"persistence true\npersistence_location {persist}/\nuser root\n"
    mosquitto.restart()
    with running_companion(sqlite_url(tmp_path), mosquitto.url) as comp:
        assert wait_until(lambda: httpx.get(comp.url + "/healthz", timeout=5).json()["ingest"]
                          .get("subscribed"), 10)  # its session exists at the broker
        mosquitto.stop()  # the store's Wi-Fi is down while the conversation happens
        agent = Agent(cfg, source=f"file:{talk}", realtime=False)
        with RunningAgent(agent):
            assert wait_until(lambda: agent.pipeline.windows > 40 and agent.queue.depth() >= 3, 10)
            sent = agent.stamper.seq
            mosquitto.start()
            assert wait_until(lambda: len(stored(comp)) >= sent, 20), "backlog not stored"
        rows = stored(comp)
        assert sorted(e["seq"] for e in rows) == list(range(sent))  # each once
        assert {e["type"] for e in rows} >= {"conversation", "cue"}


def test_the_companions_pi_config_payload_is_accepted_by_the_agent():
    from companion import device_config
    from firmware.pi import config

    doc = device_config.validate({"policy": {"stress_threshold": 0.7, "cue_budget": 2},
                                  "eu_mode": True, "brightness": 0.3, "haptic": 0.4,
                                  "tele_s": 30})
    payload = device_config.render(doc, "pi", rev=1)
    cfg = config.build({"site": "s", "device": "d", "policy": {"attribution": "headset"}})
    new = config.live_update(cfg, payload)
    assert new.policy == {"attribution": "headset", "stress_threshold": 0.7, "cue_budget": 2,
                          "eu_mode": True}
    assert (new.outputs.brightness, new.outputs.haptic_strength) == (0.3, 0.4)
    assert new.mqtt.telemetry_s == 30.0
