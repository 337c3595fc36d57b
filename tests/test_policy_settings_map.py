"""Each cue-policy setting lands in its own place in the policy, on both interpreters.

The policy holds its settings in two arrays behind hand-numbered offsets (firmware/policy.py
`_HOP = const(0)` ..), filled by firmware/policy_setup.py in the order of its key strings;
nothing else ties a setting's name to its offset. Here every setting gets a value no other
setting has, a Policy is made with them, and each offset must hold its own setting's value:
a reordered key string, a shifted constant or a setting the policy forgot fails by name.
"""

from __future__ import annotations

import json

import pytest

from firmware import policy
from firmware.cue_settings import SPEC, validate_settings
from firmware.policy import Policy

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


def held(s: dict) -> dict[str, tuple[str, str, float | int]]:
    """Setting -> (array, offset constant in firmware/policy.py, the value it must hold)."""
    median = s["smoothing"] == "median"
    return {
        "hop_s": ("f", "_HOP", s["hop_s"]),
        "min_speech": ("f", "_MIN_SPEECH", s["min_speech"]),
        "pace_min_speech": ("f", "_PACE_MIN_SPEECH", s["pace_min_speech"]),
        "conversation_gap_s": ("f", "_GAP", s["conversation_gap_s"]),
        "stress_threshold": ("f", "_THR", s["stress_threshold"]),
        "tense_threshold": ("f", "_TENSE", s["tense_threshold"]),
        "intense_threshold": ("f", "_INTENSE", s["intense_threshold"]),
        "manager_rise": ("f", "_RISE", s["manager_rise"]),
        "empathize_refractory_s": ("f", "_EMP_REFR", s["empathize_refractory_s"]),
        "slow_down_refractory_s": ("f", "_SLOW_REFR", s["slow_down_refractory_s"]),
        "min_gap_s": ("f", "_MIN_GAP", s["min_gap_s"]),
        "baseline_default": ("f", "_BASE_DEFAULT", s["baseline_default"]),
        "baseline_max": ("f", "_BASE_MAX", s["baseline_max"]),
        "settle_margin": ("f", "_SETTLE_MARGIN", s["settle_margin"]),
        "rate_rise": ("f", "_RATE_RISE", s["rate_rise"]),
        "rate_margin": ("f", "_RATE_MARGIN", s["rate_margin"]),
        "level_rise_db": ("f", "_DB_RISE", s["level_rise_db"]),
        "level_margin_db": ("f", "_DB_MARGIN", s["level_margin_db"]),
        "pace_window_s": ("f", "_PACE_ALPHA", 2 / (_windows(s["pace_window_s"]) + 1)),
        "ema_alpha": ("f", "_EMA_ALPHA", s["ema_alpha"]),
        "smoothing_windows": ("f", "_SPAN", s["smoothing_windows"] * HOP + HOP / 2),
        "stress_rise": ("f", "_STRESS_RISE", s["stress_rise"]),
        "empathize_after_s": ("n", "_N_EMP", _windows(s["empathize_after_s"])),
        "manager_after_s": ("n", "_N_SUSTAIN", _windows(s["manager_after_s"])),
        "manager_rise_s": ("n", "_N_RISE", _windows(s["manager_rise_s"])),
        "intense_after_s": ("n", "_N_INTENSE", _windows(s["intense_after_s"])),
        "settle_after_s": ("n", "_N_SETTLE", _windows(s["settle_after_s"])),
        "baseline_s": ("n", "_N_BASE", _windows(s["baseline_s"])),
        "slow_down_after_s": ("n", "_N_SLOW", _windows(s["slow_down_after_s"])),
        "cue_budget": ("n", "_BUDGET", s["cue_budget"]),
        "speaker_baseline_s": ("n", "_N_SPK", _windows(s["speaker_baseline_s"])),
        "smoothing": ("n", "_MODE", {"median": 0, "ema": 1, "none": 2}[s["smoothing"]]),
        # the median's length: 1 when not median
        "smoothing_windows/k": ("n", "_K", s["smoothing_windows"] if median else 1),
        "eu_mode": ("n", "_EU", int(s["eu_mode"])),
        "stress_from_unknown": (
            "n",
            "_FROM_UNKNOWN",
            int(s["stress_from_unknown"] and not s["eu_mode"]),
        ),
    }


# Settings the policy does not read: the attribution's (firmware/attribution.py).
NOT_THE_POLICYS = {
    "attribution",
    "headset_wearer_db",
    "near_field_db",
    "pitch_tol_st",
    "level_tol_db",
    "enrol_min_s",
}


def _arrays_cpython(given: dict) -> tuple[list, list]:
    p = Policy(given, rand_bytes=bytes)
    return list(p._f), list(p._n)


def _arrays_micropython(mpy, given: dict) -> tuple[list, list]:
    # The offsets are compile-time constants there (not module attributes): the arrays are
    # read whole and indexed with the offsets CPython reads from the same source.
    code = (
        "import json\nfrom firmware.policy import Policy\n"
        f"p = Policy(json.loads({json.dumps(given)!r}), rand_bytes=bytes)\n"
        "print(json.dumps([list(p._f), list(p._n)]))\n"
    )
    f, n = json.loads(mpy(code, heapsize="256K").stdout.strip().splitlines()[-1])
    return f, n


def test_the_given_values_are_valid_and_distinct() -> None:
    for given in (GIVEN_A, GIVEN_B):
        assert validate_settings(given)[1] == []
        values = [v for _, _, v in held(given).values()]
        floats = [v for a, _, v in held(given).values() if a == "f"]
        assert len(set(floats)) == len(floats)
        switches = ("_EU", "_MODE", "_FROM_UNKNOWN")
        ints = [v for a, c, v in held(given).values() if a == "n" and c not in switches]
        assert len(set(ints)) == len(ints)
        assert len(values) == len(floats) + len(ints) + len(switches)


def test_every_setting_has_a_place_or_an_owner() -> None:
    """A new setting in firmware/cue_settings.py must be given its place here (and in the
    policy) or named as someone else's."""
    keys = {row[0] for row in SPEC}
    placed = {k.split("/")[0] for k in held(validate_settings(GIVEN_A)[0])}
    assert keys - NOT_THE_POLICYS == placed
    assert NOT_THE_POLICYS <= keys


def test_distinct_places() -> None:
    places = [(a, c) for a, c, _ in held(GIVEN_A).values()]
    assert len(set(places)) == len(places)
    # every settings offset is a different number in its array
    for arr in ("f", "n"):
        offsets = [getattr(policy, c) for a, c in places if a == arr]
        assert len(set(offsets)) == len(offsets)


@pytest.mark.parametrize("given", [GIVEN_A, GIVEN_B], ids=["median", "none-eu"])
def test_each_setting_in_its_place_on_both_interpreters(mpy, given: dict) -> None:
    s = validate_settings(given)[0]
    expected = held(s)
    for name, arrays in (
        ("cpython", _arrays_cpython(given)),
        ("micropython", _arrays_micropython(mpy, given)),
    ):
        f, n = arrays
        got = {
            key: (f if a == "f" else n)[getattr(policy, c)] for key, (a, c, _) in expected.items()
        }
        want = {key: v for key, (_, _, v) in expected.items()}
        assert got == want, name
