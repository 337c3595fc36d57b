"""The agent's pipeline: counter-mode enrolment by command, speakers reaching the policy, the
enrolled profile never leaving the device, and the sensitivity knob."""

from __future__ import annotations

import numpy as np
from agent_support import agent_config, tiny_model
from gpiozero.pins.mock import MockFactory, MockPWMPin

from firmware.core import events, wire
from firmware.pi.agent import Agent
from firmware.pi.cues import CuePolicy

COMMON = events.fields("*")  # name, required, kind, limits of each field
TYPES = COMMON[COMMON.index("type") + 3]
ALLOWED = set(COMMON[::4]) | {
    name for etype in TYPES for name in events.fields(etype)[::4]
}


def voice(seconds: float, f0: float, amp: float, seed: int) -> np.ndarray:
    """A voiced, syllable-paced harmonic tone: enough for the pitch and level trackers."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    env = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 0.5
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    return (amp * env * x * 32767 * 0.3 + rng.normal(0, 30, n)).astype(np.int16)


def feed(agent: Agent, pcm: np.ndarray) -> list[dict]:
    sent = []
    for i in range(0, len(pcm) - 3999, 4000):
        sent += agent.process(pcm[i : i + 4000])
    return sent


def test_enrol_command_teaches_the_staff_voice_and_keeps_it_on_the_device(tmp_path):
    factory = MockFactory(pin_class=MockPWMPin)
    cfg = agent_config(tmp_path, 1, outputs={"enabled": True},
                       model={"path": str(tiny_model(tmp_path / "model"))})
    agent = Agent(cfg, pin_factory=factory)
    try:
        seen: list[str] = []
        real = agent.pipeline.policy.process
        agent.pipeline.policy.process = lambda w: seen.append(w["speaker"]) or real(w)
        feed(agent, voice(3, 120, 0.3, 1))
        assert seen and set(seen) == {"unknown"}  # counter mode, nobody enrolled yet

        assert agent._on_command("enrol", {}) == {"ok": True, "enrolling": True}
        sent = feed(agent, voice(8, 120, 0.3, 2))  # the staff member alone at shift start
        assert not agent.pipeline.enrolling
        assert agent.outputs.idle(3) and max(float(s.state) for s in factory.pin(27).states) > 0
        assert all(e["type"] != "enrolled" for e in sent)  # nothing about the voice is sent

        seen.clear()
        feed(agent, voice(4, 120, 0.3, 3))
        assert seen.count("staff") >= len(seen) - 2
        seen.clear()
        feed(agent, voice(4, 230, 0.15, 4))  # a higher, quieter voice across the counter
        assert seen.count("customer") >= len(seen) - 2
        for row in agent.queue.peek(100):  # only closed-schema events, nothing about voices
            assert set(wire.decode(row.payload)) <= ALLOWED
    finally:
        agent.close()


def test_enrol_is_refused_in_headset_mode(tmp_path):
    cfg = agent_config(tmp_path, 1, policy={"attribution": "headset"},
                       model={"path": str(tiny_model(tmp_path / "model"))})
    agent = Agent(cfg)
    try:
        res = agent._on_command("enrol", None)
        assert res["ok"] is False and "counter" in res["error"]
    finally:
        agent.close()


def test_sensitivity_moves_the_threshold_within_the_policy_rules():
    mid = CuePolicy({}, 0.5, model_threshold=0.62).effective
    high = CuePolicy({}, 1.0, model_threshold=0.62).effective
    low = CuePolicy({}, 0.0, model_threshold=0.62).effective
    assert mid["stress_threshold"] == 0.62  # the calibrated threshold as shipped
    assert high["stress_threshold"] == 0.51  # more cues: lower, but above baseline_max + margin
    assert low["stress_threshold"] == 0.77
    assert high["tense_threshold"] <= high["stress_threshold"]
    own = CuePolicy({"stress_threshold": 0.7}, 0.5, model_threshold=0.62).effective
    assert own["stress_threshold"] == 0.7  # a site's explicit threshold wins over the model's
