"""Cue policy rules one by one: EU mode, settings validation, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from firmware.core.cue_settings import SettingsError, defaults, rows, validate_settings
from firmware.core.policy import Policy, PolicyError
from firmware.host import policy_replay

DOC = json.loads((Path(__file__).parent / "data" / "policy_scenarios.json").read_text())
SCENARIOS = {sc["name"]: sc for sc in DOC["scenarios"]}


def _with_staff_score(sc: dict, score: float, **settings) -> dict:
    script = [
        dict(seg, score=score) if seg.get("speaker") == "staff" else seg for seg in sc["script"]
    ]
    return {"script": script, "settings": dict(sc.get("settings", {}), **settings)}


@pytest.mark.parametrize(
    "name", ["staff_mirrors_customer", "keeps_escalating", "budget_spent_manager_still_called"]
)
def test_eu_mode_ignores_the_staff_voice_stress(name: str) -> None:
    sc = SCENARIOS[name]
    calm = policy_replay.run(_with_staff_score(sc, 0.0, eu_mode=True))
    tense = policy_replay.run(_with_staff_score(sc, 0.99, eu_mode=True))
    assert calm == tense  # nothing decided or sent depends on the staff member's stress
    # ... while outside EU mode a staff voice whose stress rises with the customer's counts
    # (as mirroring) ...
    outside = policy_replay.run(_staff_stressed_with_customer(sc, 0.99))
    assert [d.get("reason") for d in outside].count("mirroring") >= 1
    # ... but a voice the model reads as stressed from its first words, before the customer
    # was tense, is just how that voice scores: that alone is not mirroring.
    # (The conversation's peak may differ: at the counter a window at a turn change, louder
    # than the staff's own voice and at the top of the scale, counts as the customer's, test
    # test_at_the_counter_an_unplaced_voice_at_the_top_of_the_scale_is_the_customer.)
    always = policy_replay.run(_with_staff_score(sc, 0.99))
    never = policy_replay.run(_with_staff_score(sc, 0.0))
    assert [_no_peak(d) for d in always] == [_no_peak(d) for d in never]


def _no_peak(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "peak"}


def _staff_stressed_with_customer(sc: dict, score: float) -> dict:
    """Staff turns keep their calm scores until the customer turns tense, then read `score`."""
    script, tense = [], False
    for seg in sc["script"]:
        s = seg.get("score", 0.0)
        if seg.get("speaker") == "customer" and max(s if isinstance(s, list) else [s]) >= 0.5:
            tense = True
        script.append(dict(seg, score=score) if tense and seg.get("speaker") == "staff" else seg)
    return {"script": script, "settings": dict(sc.get("settings", {}))}


def test_eu_mode_events_carry_customer_figures_only() -> None:
    sc = SCENARIOS["staff_mirrors_customer"]
    for d in policy_replay.run(dict(sc, settings={"eu_mode": True})):
        if d["type"] == "cue":
            assert d["cue"] == "slow_down" and d["reason"] in ("faster", "louder", "mirroring")
            assert "stress_s" not in d  # pace and loudness only
            assert d["score"] <= 0.6  # the customer's score, not the staff member's


def test_unknown_speaker_never_gives_slow_down() -> None:
    sc = SCENARIOS["staff_speeds_up_calm_customer"]
    script = [
        dict(seg, speaker="unknown") if seg.get("speaker") == "staff" else seg
        for seg in sc["script"]
    ]
    cues = [d for d in policy_replay.run({"script": script}) if d["type"] == "cue"]
    assert cues == []
    assert any(d.get("cue") == "slow_down" for d in policy_replay.run(sc))


def test_bad_window_input_says_what_is_wrong() -> None:
    p = Policy(rand_bytes=policy_replay.CountingRandom())
    with pytest.raises(PolicyError, match="speaker must be staff, customer or unknown"):
        p.step(1.0, 0.5, "cashier", 3.0, -30.0, 0.9)
    # A missing or broken score is skipped, the window still counts for the conversation.
    out = p.step(1.0, math.nan, "customer", 3.0, -30.0, 0.9)
    assert [d["phase"] for d in out] == ["start"]
    assert p.step(1.25, None, "customer", 3.0, -30.0, 0.9) == []
    with pytest.raises(PolicyError, match="rand_bytes"):
        Policy()


def test_defaults_are_valid_and_complete() -> None:
    s, errors = validate_settings({})
    assert errors == []
    assert s == defaults() and len(s) == len(list(rows()))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"empathise_after_s": 1.0},
            "unknown setting 'empathise_after_s'; did you mean 'empathize_after_s'?",
        ),
        (
            {"stress_threshold": 1.2},
            "stress_threshold must be between 0.3 and 0.95 score (got 1.2); the default is 0.6",
        ),
        ({"cue_budget": 2.5}, "cue_budget must be a whole number"),
        ({"cue_budget": "4"}, "cue_budget must be a number"),
        ({"eu_mode": "yes"}, "eu_mode must be true or false"),
        ({"smoothing": "mean"}, "smoothing must be one of median, ema, none"),
        (
            {"intense_threshold": 0.55, "stress_threshold": 0.6},
            "intense_threshold (0.55) must be above stress_threshold",
        ),
        ({"tense_threshold": 0.7}, "tense_threshold (0.7) must not be above stress_threshold"),
        ({"baseline_max": 0.55}, "baseline_max + settle_margin"),
        (
            {"eu_mode": True, "stress_from_unknown": True},
            "stress_from_unknown must be false in EU mode",
        ),
        (
            {"hop_s": 0.5, "empathize_after_s": 0.25},
            "empathize_after_s (0.25 s) is shorter than one window hop",
        ),
        ({"stress_threshold": math.nan}, "not NaN"),
    ],
)
def test_settings_errors_say_how_to_fix_them(given: dict, message: str) -> None:
    s, errors = validate_settings(given)
    assert any(message in e for e in errors), errors
    # A value that is wrong by itself is not applied: it is left at its default.
    for key in given:
        if key in s and any(
            e.startswith(key + " must") and ("(got" in e or "NaN" in e) for e in errors
        ):
            assert s[key] == defaults()[key]
    with pytest.raises(SettingsError):
        Policy(given, rand_bytes=policy_replay.CountingRandom())


def test_valid_settings_apply_and_change_behaviour() -> None:
    s, errors = validate_settings({"cue_budget": 0, "conversation_gap_s": 30})
    assert errors == [] and s["cue_budget"] == 0 and s["conversation_gap_s"] == 30.0
    split = policy_replay.run(SCENARIOS["long_silences_split"])
    joined = policy_replay.run(
        dict(SCENARIOS["long_silences_split"], settings={"conversation_gap_s": 30})
    )
    assert [d["phase"] for d in split if d["type"] == "conversation"].count("start") == 2
    assert [d["phase"] for d in joined if d["type"] == "conversation"].count("start") == 1


def test_settings_are_shared_with_micropython(mpy) -> None:
    code = (
        "import json\nfrom firmware.core.cue_settings import validate_settings\n"
        "for g in %r:\n    print(json.dumps(validate_settings(g)))\n"
    )
    cases = [
        {},
        {"empathise_after_s": 1},
        {"stress_threshold": 1.2},
        {"eu_mode": True, "stress_from_unknown": True},
        {"cue_budget": 2.5},
        {"hop_s": 0.5},
    ]
    out = mpy(code % (cases,)).stdout.splitlines()
    for g, line in zip(cases, out, strict=True):
        s, errors = json.loads(line)
        assert [s, errors] == [validate_settings(g)[0], validate_settings(g)[1]], g


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "policy.md").read_text()
    missing = [row[0] for row in list(rows()) if f"`{row[0]}`" not in doc]
    assert missing == []


def _top_score_turn(
    level_db: float,
    speaker: str = "customer",
    score: float = 0.95,
    calm_score: float = 0.25,
    **settings,
) -> dict:
    """Scenario top_score_in_a_calm_voice with its 0.95 turn at `level_db` (calm turns: -34),
    read `score`, and the customer's calm turns read `calm_score`."""
    sc = SCENARIOS["top_score_in_a_calm_voice"]
    script = []
    for seg in sc["script"]:
        if seg.get("score") == 0.95:
            seg = dict(seg, level_db=level_db, score=score)
        elif seg.get("speaker") == "customer":
            seg = dict(seg, score=calm_score)
        if seg.get("speaker") == "customer":
            seg = dict(seg, speaker=speaker)
        script.append(seg)
    return {"script": script, "settings": settings}


def _stress_cues(scenario: dict) -> list[tuple[str, str]]:
    return [
        (d["cue"], d["reason"])
        for d in policy_replay.run(scenario)
        if d["type"] == "cue" and d["cue"] in ("empathize", "call_manager")
    ]


def test_stress_needs_a_voice_raised_above_the_own_calm_voice() -> None:
    # At the calm turns' level the top of the scale is no stress cue (scenario
    # top_score_in_a_calm_voice), nor raised 3 dB (below stress_louder_db, 3.5 dB: the
    # spread of one calm voice); raised 4 dB it is stress (empathize first), and very intense,
    # the manager at once, only raised twice stress_louder_db (7 dB: shouting).
    assert _stress_cues(_top_score_turn(-34.0)) == []
    assert _stress_cues(_top_score_turn(-31.0)) == []
    assert _stress_cues(_top_score_turn(-30.0)) == [("empathize", "stress_sustained")]
    assert _stress_cues(_top_score_turn(-27.5)) == [("empathize", "stress_sustained")]
    assert _stress_cues(_top_score_turn(-26.5)) == [("call_manager", "very_intense")]
    # The setting moves both lines.
    assert _stress_cues(_top_score_turn(-30.0, stress_louder_db=5.0)) == []
    assert _stress_cues(_top_score_turn(-31.0, stress_louder_db=2.0)) == [
        ("empathize", "stress_sustained")
    ]
    assert _stress_cues(_top_score_turn(-29.5, stress_louder_db=2.0)) == [
        ("call_manager", "very_intense")
    ]
    assert _stress_cues(_top_score_turn(-34.0, stress_louder_db=0.0)) == [
        ("call_manager", "very_intense")
    ]
    # An unattributed voice whose stress counts as the customer's: its level counts too.
    assert _stress_cues(_top_score_turn(-34.0, "unknown", stress_from_unknown=True)) == []
    assert _stress_cues(_top_score_turn(-30.0, "unknown", stress_from_unknown=True)) == [
        ("empathize", "stress_sustained")
    ]
    assert _stress_cues(_top_score_turn(-26.0, "unknown", stress_from_unknown=True)) == [
        ("call_manager", "very_intense")
    ]


def test_a_voice_raised_twice_is_stressed_from_the_stress_threshold() -> None:
    # A customer whose calm voice the model reads at 0.45 must rise stress_rise above it
    # (0.8) to count as stressed; a turn read 0.7 raised 4 dB is no cue. Raised twice
    # stress_louder_db (8 dB) it is: that loud, the voice is not one the model merely reads
    # high when calm, and stress_threshold (0.6) is enough. Before 2026-12-08 such turns
    # (fearful stretches 10-17 dB up, read 0.77-0.81) went uncued.
    assert _stress_cues(_top_score_turn(-30.0, score=0.7, calm_score=0.45)) == []
    assert _stress_cues(_top_score_turn(-26.0, score=0.7, calm_score=0.45)) == [
        ("empathize", "stress_sustained")
    ]
    # Not below stress_threshold, however loud (the model's reading still decides).
    assert _stress_cues(_top_score_turn(-20.0, score=0.55, calm_score=0.45)) == []


def test_a_flare_up_nudge_the_gap_delays_is_sent_when_the_gap_is_over() -> None:
    # Empathize, then the manager, then settled; the customer shouts again while the last
    # nudge is less than min_gap_s ago (20 s here, and no empathize refractory, which drops
    # a nudge instead of delaying it; at the defaults a slow_down just before does this).
    # The flare-up's empathize (in place of a second manager call) waits for the gap and is
    # sent while the shouting goes on, not lost because the episode had reached the manager
    # stage already (it was, before 2026-12-07).
    def turn(for_s: float, score: float, level_db: float) -> dict:
        return {"for_s": for_s, "speaker": "customer", "score": score, "rate": 3.6,
                "level_db": level_db, "speech": 0.85}  # fmt: skip

    script = [
        {"for_s": 1, "speaker": "silence"},
        turn(4, 0.25, -34.0),
        turn(2.5, 0.7, -24.0),
        turn(2, 0.97, -20.0),
        turn(14, 0.25, -34.0),
        turn(8, 0.97, -20.0),
        turn(14, 0.25, -34.0),
        {"for_s": 10, "speaker": "silence"},
    ]
    cues = [
        (d["cue"], d["t"])
        for d in policy_replay.run(
            {"script": script, "settings": {"min_gap_s": 20.0, "empathize_refractory_s": 0.0}}
        )
        if d["type"] == "cue"
    ]
    assert [c for c, _ in cues] == ["empathize", "call_manager", "settled", "empathize", "settled"]
    first, flare = cues[0][1], cues[3][1]
    assert flare == pytest.approx(first + 20.0, abs=0.25)  # the first window the gap allows
    assert 23.5 + 1.0 <= flare <= 31.5  # inside the flare-up (23.5 .. 31.5 s)


def _unplaced_turn(score: float, **settings) -> dict:
    """Scenario top_score_in_a_calm_voice with its loud turn (10 dB above the customer's calm
    turns) from a voice the counter's enrolment cannot place (speaker "unknown")."""
    sc = SCENARIOS["top_score_in_a_calm_voice"]
    script = [
        dict(seg, speaker="unknown", score=score, level_db=-24.0)
        if seg.get("score") == 0.95
        else seg
        for seg in sc["script"]
    ]
    return {"script": script, "settings": settings}


def test_at_the_counter_an_unplaced_voice_at_the_top_of_the_scale_is_the_customer() -> None:
    # Counter attribution (the default) outside EU mode: someone shouting whom the enrolment
    # cannot place is taken for the customer, as the attribution takes a voice 10 dB above
    # the staff's enrolment; an angry customer near the staff's pitch and level went uncued.
    assert _stress_cues(_unplaced_turn(0.95)) == [("call_manager", "very_intense")]
    # Only the top of the scale: a merely stressed unplaced voice stays unplaced.
    assert _stress_cues(_unplaced_turn(0.8)) == []
    # Not in EU mode (nothing inferred from a voice that may be the staff's), not with a
    # headset (there the level places the wearer).
    assert _stress_cues(_unplaced_turn(0.95, eu_mode=True)) == []
    assert _stress_cues(_unplaced_turn(0.95, attribution="headset")) == []
    # Not a voice at the staff's own level (-30 dBFS in this script): a window where the staff
    # and the customer overlap is unplaced too, and some staff voices read high when calm.
    quiet = _unplaced_turn(0.95)
    quiet["script"] = [
        dict(seg, level_db=-28.0) if seg.get("speaker") == "unknown" else seg
        for seg in quiet["script"]
    ]
    assert _stress_cues(quiet) == []


def test_before_a_calm_voice_the_top_of_the_scale_must_last_longer_unless_above_the_staff() -> None:
    # A customer whose first words read at the top of the scale: with no calm voice of theirs
    # to compare with, the manager waits for empathize_after_s (1.5 s) of it, not
    # intense_after_s (1 s): a conversation's first words often read there. At the counter a
    # voice twice stress_louder_db (7 dB) above the staff member's own is shouting, calm voice
    # or not, and gets the manager after 1 s (the demo's tense turn, 8 dB above the staff).
    def first_manager_call(level_db: float, **settings) -> float:
        script = [
            {"for_s": 1, "speaker": "silence"},
            {"for_s": 3, "speaker": "staff", "score": 0.2, "rate": 3.5, "level_db": -30.0,
             "speech": 0.85},
            {"for_s": 0.5, "speaker": "silence"},
            {"for_s": 4, "speaker": "customer", "score": 0.95, "rate": 3.6,
             "level_db": level_db, "speech": 0.85},
            {"for_s": 10, "speaker": "silence"},
        ]  # fmt: skip
        decisions = policy_replay.run({"script": script, "settings": settings})
        return next(d["t"] for d in decisions if d.get("cue") == "call_manager")

    near_staff = first_manager_call(-28.0)  # 2 dB above the staff voice
    above_staff = first_manager_call(-22.0)  # 8 dB above it
    assert near_staff - above_staff == 0.5  # two more windows of the top of the scale
    # Not with a headset (no enrolled staff level): the longer wait either way.
    assert first_manager_call(-22.0, attribution="headset") == near_staff
