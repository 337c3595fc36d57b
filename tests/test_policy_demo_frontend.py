"""The policy and the counter attribution on the real feature front end (models.features) over
the bundled demo conversation. The stress score is an oracle taken from the demo's own style
labels (calm 0.25, tense 0.75, agitated 0.85, hurried 0.5, mixed by how much of each window a
turn fills), so this measures the policy's timing on real speech/level/pitch/rate windows, not
the model; the model's end-to-end figure belongs to the agent and device tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware.core.attribution_modes import CounterAttribution
from firmware.core.policy import Policy
from firmware.host.policy_replay import CountingRandom

DATA = Path(__file__).resolve().parent.parent / "calmcue" / "data"
STYLE_SCORE = {"calm": 0.25, "tense": 0.75, "agitated": 0.85, "hurried": 0.5}


@pytest.fixture(scope="module")
def demo() -> tuple[list[dict], dict]:
    sf = pytest.importorskip("soundfile")
    from models.features import extract

    audio, sr = sf.read(DATA / "demo_conversation.wav", dtype="int16")
    _, records = extract(audio, sr=sr)
    return [r.as_dict() for r in records], json.loads((DATA / "demo_conversation.json").read_text())


def overlap(turn: dict, t: float) -> float:
    return max(0.0, min(t, turn["end"]) - max(t - 1.0, turn["start"]))


def holder(turns: list[dict], t: float) -> str:
    """Who fills at least 3/4 of the window ending at t, else 'mixed'."""
    for turn in turns:
        if overlap(turn, t) >= 0.75:
            return turn["speaker"]
    return "mixed"


def oracle_score(turns: list[dict], t: float) -> float:
    num = den = 0.0
    for turn in turns:
        o = overlap(turn, t)
        num += o * STYLE_SCORE[turn["style"]]
        den += o
    return num / den if den else 0.1


def enrolled(windows: list[dict], turns: list[dict]) -> CounterAttribution:
    # Stand-in for the shift-start enrolment: the same staff voice, its first three calm turns.
    a = CounterAttribution()
    staff = [t for t in turns if t["speaker"] == "staff" and t["style"] == "calm"][:3]
    for w in windows:
        if any(t["start"] + 1.0 <= w["t"] <= t["end"] for t in staff):
            a.enrol(w["speech"], w["level_db"], w["f0_hz"])
    a.finish_enrolment()
    return a


def test_counter_attribution_on_the_demo(demo) -> None:
    windows, meta = demo
    a = enrolled(windows, meta["turns"])
    by_truth: dict[str, list[str]] = {"staff": [], "customer": [], "mixed": []}
    for w in windows:
        if w["speech"] >= 0.4:
            label = a.process(w["speech"], w["level_db"], w["f0_hz"])
            by_truth[holder(meta["turns"], w["t"])].append(label)
    staff, customer = by_truth["staff"], by_truth["customer"]
    assert "customer" not in staff and staff.count("staff") / len(staff) >= 0.85
    assert "staff" not in customer and customer.count("customer") / len(customer) >= 0.9


def test_policy_on_the_demo_front_end(demo) -> None:
    windows, meta = demo
    turns = meta["turns"]
    a = enrolled(windows, turns)
    p = Policy(rand_bytes=CountingRandom())
    decisions = []
    for w in windows:
        speaker = a.process(w["speech"], w["level_db"], w["f0_hz"])
        score = oracle_score(turns, w["t"])
        decisions += p.step(w["t"], score, speaker, w["rate"], w["level_db"], w["speech"])
    decisions += p.finish(windows[-1]["t"])
    cues = [d for d in decisions if d["type"] == "cue"]
    onset = next(t["start"] for t in turns if t["style"] != "calm")
    asks = next(t["start"] for t in turns if "manager" in t["text"])
    assert cues and cues[0]["t"] >= onset, "a cue during the calm opening"
    assert cues[0]["cue"] == "empathize" and cues[0]["t"] - onset <= 3.0  # issue 13 target
    manager = [c for c in cues if c["cue"] == "call_manager"]
    assert len(manager) == 1 and manager[0]["t"] < asks
    assert cues[-1]["cue"] == "settled"
    assert [d["phase"] for d in decisions if d["type"] == "conversation"] == ["start", "end"]
