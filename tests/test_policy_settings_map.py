"""Each cue-policy setting lands in its own named place in the policy, on both interpreters.

Every setting gets a value no other setting has, a Policy is made with them, and each of the
policy's attributes must hold its own setting's value (durations in windows): two settings
swapped in Policy.configure, or a setting the policy forgot, fails by name.
"""

from __future__ import annotations

import json

import pytest

from firmware.core.cue_settings import rows, validate_settings
from firmware.core.policy import Policy

HOP = 0.25

# Two sets of given settings, every value distinct within a set (and the switches differing
# between the sets, so no two switches can swap unseen).
GIVEN_A = {
    "hop_s": HOP,
    "min_speech": 0.41,
    "pace_min_speech": 0.62,
    "conversation_gap_s": 9.5,
    "stress_threshold": 0.63,
    "tense_threshold": 0.52,
    "intense_threshold": 0.91,
    "manager_rise": 0.16,
    "empathize_refractory_s": 21.0,
    "slow_down_refractory_s": 16.5,
    "min_gap_s": 3.5,
    "baseline_default": 0.31,
    "baseline_max": 0.42,
    "settle_margin": 0.11,
    "rate_rise": 0.85,
    "rate_margin": 0.35,
    "level_rise_db": 4.5,
    "level_margin_db": 3.25,
    "pace_window_s": 2.75,  # 11 windows
    "ema_alpha": 0.55,
    "smoothing": "median",
    "smoothing_windows": 5,
    "stress_rise": 0.36,
    "empathize_after_s": 1.5,  # 6 windows
    "manager_after_s": 7.0,  # 28
    "manager_rise_s": 1.0,  # 4
    "intense_after_s": 0.75,  # 3
    "settle_after_s": 2.25,  # 9
    "baseline_s": 2.5,  # 10
    "slow_down_after_s": 1.75,  # 7
    "cue_budget": 13,
    "speaker_baseline_s": 3.0,  # 12
    "eu_mode": False,
    "stress_from_unknown": True,
}
GIVEN_B = dict(GIVEN_A, smoothing="none", eu_mode=True, stress_from_unknown=False)


def _windows(seconds: float) -> int:
    return int(seconds / HOP + 0.5)


def held(s: dict) -> dict[str, tuple[str, float | int]]:
    """Setting -> (the attribute of Policy.settings that holds it, the value it must hold)."""
    median = s["smoothing"] == "median"
    return {
        "hop_s": ("hop", s["hop_s"]),
        "min_speech": ("min_speech", s["min_speech"]),
        "pace_min_speech": ("pace_min_speech", s["pace_min_speech"]),
        "conversation_gap_s": ("conversation_gap", s["conversation_gap_s"]),
        "stress_threshold": ("stress_threshold", s["stress_threshold"]),
        "tense_threshold": ("tense_threshold", s["tense_threshold"]),
        "intense_threshold": ("intense_threshold", s["intense_threshold"]),
        "manager_rise": ("manager_rise", s["manager_rise"]),
        "empathize_refractory_s": ("empathize_refractory", s["empathize_refractory_s"]),
        "slow_down_refractory_s": ("slow_down_refractory", s["slow_down_refractory_s"]),
        "min_gap_s": ("min_gap", s["min_gap_s"]),
        "baseline_default": ("baseline_default", s["baseline_default"]),
        "baseline_max": ("baseline_max", s["baseline_max"]),
        "settle_margin": ("settle_margin", s["settle_margin"]),
        "rate_rise": ("rate_rise", s["rate_rise"]),
        "rate_margin": ("rate_margin", s["rate_margin"]),
        "level_rise_db": ("level_rise_db", s["level_rise_db"]),
        "level_margin_db": ("level_margin_db", s["level_margin_db"]),
        "pace_window_s": ("pace_alpha", 2 / (_windows(s["pace_window_s"]) + 1)),
        "ema_alpha": ("ema_alpha", s["ema_alpha"]),
        "smoothing_windows": ("span", s["smoothing_windows"] * HOP + HOP / 2),
        "stress_rise": ("stress_rise", s["stress_rise"]),
        "empathize_after_s": ("empathize_after", _windows(s["empathize_after_s"])),
        "manager_after_s": ("manager_after", _windows(s["manager_after_s"])),
        "manager_rise_s": ("manager_rise_after", _windows(s["manager_rise_s"])),
        "intense_after_s": ("intense_after", _windows(s["intense_after_s"])),
        "settle_after_s": ("settle_after", _windows(s["settle_after_s"])),
        "baseline_s": ("baseline_n", _windows(s["baseline_s"])),
        "slow_down_after_s": ("slow_down_after", _windows(s["slow_down_after_s"])),
        "cue_budget": ("cue_budget", s["cue_budget"]),
        "speaker_baseline_s": ("speaker_baseline_n", _windows(s["speaker_baseline_s"])),
        # firmware/core/policy.py _MEDIAN, _EMA, _NONE
        "smoothing": ("smoothing", {"median": 0, "ema": 1, "none": 2}[s["smoothing"]]),
        # the median's length: 1 when not median
        "smoothing_windows/k": ("median_k", s["smoothing_windows"] if median else 1),
        "eu_mode": ("eu_mode", s["eu_mode"]),
        "stress_from_unknown": (
            "stress_from_unknown",
            s["stress_from_unknown"] and not s["eu_mode"],
        ),
    }


# Settings the policy does not read: the attribution's (firmware/core/attribution.py).
NOT_THE_POLICYS = {
    "attribution",
    "headset_wearer_db",
    "near_field_db",
    "pitch_tol_st",
    "level_tol_db",
    "enrol_min_s",
}


ATTRIBUTES = sorted(a for a, _ in held(GIVEN_A).values())


def _held_cpython(given: dict) -> dict:
    p = Policy(given, rand_bytes=bytes)
    # a float setting is a one-float cell (firmware/core/policy.py _cell)
    return {
        a: v if isinstance(v, int) else v[0]
        for a, v in ((a, getattr(p.settings, a)) for a in ATTRIBUTES)
    }


def _held_micropython(mpy, given: dict) -> dict:
    code = (
        "import json\nfrom firmware.core.policy import Policy\n"
        f"p = Policy(json.loads({json.dumps(given)!r}), rand_bytes=bytes)\n"
        "def held(v):\n    return v if isinstance(v, (int, bool)) else v[0]\n"
        f"print(json.dumps(dict((a, held(getattr(p.settings, a))) for a in {ATTRIBUTES!r})))\n"
    )
    return json.loads(mpy(code, heapsize="256K").stdout.strip().splitlines()[-1])


def test_the_given_values_are_valid_and_distinct() -> None:
    switches = ("smoothing", "eu_mode", "stress_from_unknown")
    for given in (GIVEN_A, GIVEN_B):
        assert validate_settings(given)[1] == []
        values = [v for a, v in held(given).values() if a not in switches]
        assert len(set(values)) == len(values)


def test_every_setting_has_a_place_or_an_owner() -> None:
    """A new setting in firmware/core/cue_settings.py must be given its place here (and in the
    policy) or named as someone else's."""
    keys = {row[0] for row in list(rows())}
    placed = {k.split("/")[0] for k in held(validate_settings(GIVEN_A)[0])}
    assert keys - NOT_THE_POLICYS == placed
    assert NOT_THE_POLICYS <= keys


def test_distinct_places() -> None:
    places = [a for a, _ in held(GIVEN_A).values()]
    assert len(set(places)) == len(places)


@pytest.mark.parametrize("given", [GIVEN_A, GIVEN_B], ids=["median", "none-eu"])
def test_each_setting_in_its_place_on_both_interpreters(mpy, given: dict) -> None:
    s = validate_settings(given)[0]
    want = {a: v for a, v in held(s).values()}
    for name, got in (
        ("cpython", _held_cpython(given)),
        ("micropython", _held_micropython(mpy, given)),
    ):
        assert got == want, name
        for a in ("eu_mode", "stress_from_unknown"):
            assert isinstance(got[a], bool), (name, a)
