"""Cue policy scenarios: scripted conversations with their expected cue timelines, run under
CPython and under the real MicroPython unix port, which must decide exactly the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware.core import events, wire
from firmware.core.policy import event_fields
from firmware.host import policy_replay

DATA = Path(__file__).parent / "data" / "policy_scenarios.json"
DOC = json.loads(DATA.read_text())
SCENARIOS = {sc["name"]: sc for sc in DOC["scenarios"]}
DEMO = Path(__file__).resolve().parent.parent / "calmcue" / "data" / "demo_conversation.json"


def timeline(decisions: list[dict]) -> list[tuple[str, float]]:
    return [(d.get("cue") or d["phase"], d["t"]) for d in decisions]


def check_expected(name: str, decisions: list[dict]) -> None:
    got = timeline(decisions)
    want = SCENARIOS[name]["expect"]
    assert [g[0] for g in got] == [w[0] for w in want], f"{name}: cue order {got}"
    for (cue, t), (_, lo, hi) in zip(got, want, strict=True):
        assert lo <= t <= hi, f"{name}: {cue} at {t} s, expected between {lo} and {hi} s"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_timeline_cpython(name: str) -> None:
    decisions = policy_replay.run(SCENARIOS[name], DOC["hop_s"])
    check_expected(name, decisions)
    # Every decision is a valid v1 event once the device stamps it.
    stamper = events.Stamper("store-1", "counter-2", boot=1)
    for d in decisions:
        etype, fields = event_fields(d)
        event = stamper.stamp(etype, fields, up_ms=int(d["t"] * 1000))
        assert wire.decode(events.encode(event)) == event
    # One conversation id per conversation, a fresh one for the next.
    convs = [d["conv"] for d in decisions if d.get("phase") == "start"]
    assert len(set(convs)) == len(convs)


def test_scenarios_identical_on_micropython(mpy) -> None:
    # The replay harness reads the whole JSON file, hence the large heap; the policy's own
    # footprint is measured by firmware/host/bench_policy.py.
    proc = mpy(
        f"from firmware.host import policy_replay\npolicy_replay.main({str(DATA)!r})", heapsize="2M"
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [ln["name"] for ln in lines] == list(SCENARIOS)
    for ln in lines:
        cpython = policy_replay.run(SCENARIOS[ln["name"]], DOC["hop_s"])
        assert ln["decisions"] == cpython, ln["name"]
        check_expected(ln["name"], ln["decisions"])


def test_manager_once_per_conversation_even_without_budget() -> None:
    sc = dict(SCENARIOS["keeps_escalating"], settings={"cue_budget": 0})
    cues = [d["cue"] for d in policy_replay.run(sc) if d["type"] == "cue"]
    assert cues == ["call_manager"]  # empathize dropped by the budget, the manager is not


def _demo_script(hop: float) -> tuple[list[dict], dict]:
    """The bundled demo conversation's timeline as a script. The scores per style are an
    assumption about the model (calm 0.25, tense 0.75, agitated 0.85, hurried staff 0.45),
    not a measurement; the timing, turn order and pauses are the demo's own."""
    demo = json.loads(DEMO.read_text())
    style = {
        "calm": (0.25, 3.5, 0.0),
        "tense": (0.75, 4.6, 4.0),
        "agitated": (0.85, 5.2, 8.0),
        "hurried": (0.45, 5.5, 4.0),
    }
    script: list[dict] = []
    q = 0  # in hops, so the script stays on the demo's clock
    for turn in demo["turns"]:
        start, end = round(turn["start"] / hop), round(turn["end"] / hop)
        if start > q:
            script.append({"for_s": (start - q) * hop, "speaker": "silence"})
        score, rate, up = style[turn["style"]]
        base = -32.0 if turn["speaker"] == "staff" else -30.0
        script.append(
            {
                "for_s": (end - start) * hop,
                "speaker": turn["speaker"],
                "score": score,
                "rate": rate,
                "level_db": base + up,
                "speech": 0.85,
                "jitter": 0.04,
            }
        )
        q = end
    script.append({"for_s": 12.0, "speaker": "silence"})
    return script, demo


def test_demo_conversation_onset_to_cue_within_budget() -> None:
    hop = DOC["hop_s"]
    script, demo = _demo_script(hop)
    decisions = policy_replay.run({"script": script}, hop)
    cues = [d for d in decisions if d["type"] == "cue"]
    onset = next(t["start"] for t in demo["turns"] if t["style"] != "calm")
    asks_for_manager = next(t["start"] for t in demo["turns"] if "manager" in t["text"])
    assert cues, "no cue at all on the demo conversation"
    assert cues[0]["t"] >= onset, "a cue during the calm opening"
    assert cues[0]["cue"] == "empathize"
    # issue 13: onset to the first stress cue within 3 s (empathize after 1.5 s of stressed
    # speech, not 0.75 s: a shorter run let calm conversations through)
    assert cues[0]["t"] - onset <= 3.0
    manager = [c for c in cues if c["cue"] == "call_manager"]
    assert len(manager) == 1 and manager[0]["t"] < asks_for_manager
    assert cues[-1]["cue"] == "settled"
    assert [d["phase"] for d in decisions if d["type"] == "conversation"] == ["start", "end"]
