"""Each cue-policy setting lands in its own named place in the policy, on both interpreters.

Every setting gets a value no other setting has, a Policy is made with them, and each of the
policy's attributes must hold its own setting's value (durations in windows): two settings
swapped in Policy.configure, or a setting the policy forgot, fails by name.

The map is derived, not written out per setting: the settings are the rows of
firmware/core/cue_settings.py, the policy's are those Policy.configure reads (`v["name"]`), and a
setting's place follows the one naming rule of firmware/core/policy.py (a setting `x_s` in seconds
is held at `x`, any other `x` at `x`; durations counted in windows). A new setting that follows
the rule needs no edit here; one that does not fails here until it is named in SPECIAL with the
value the policy derives from it. A setting read by neither the policy nor the attribution fails
too.
"""

from __future__ import annotations

import json
import re

import pytest

from calmcue.shared.mpy import REPO
from firmware.core.cue_settings import rows, validate_settings
from firmware.core.policy import Policy

HOP = 0.25

# Given values for the settings whose rules tie them to others (firmware/core/cue_settings.py
# _rules: thresholds in order, the calm level below them, ...), every value distinct within a
# set; a setting not named here gets a distinct value in its range from its row (given()).
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
# the switches differ between the sets, so no two switches can swap unseen
GIVEN_B = dict(GIVEN_A, smoothing="none", eu_mode=True, stress_from_unknown=False)


def _source(path: str, start: str, end: str) -> str:
    text = (REPO / path).read_text()
    return text[text.index(start) : text.index(end, text.index(start))]


# What Policy.configure reads, and what the attribution reads (firmware/core/attribution*.py).
READ_BY_POLICY = set(re.findall(r'\bv\["(\w+)"\]', _source(
    "firmware/core/policy.py", "    def configure(", "    def reset(")))  # fmt: skip
READ_BY_ATTRIBUTION = set(re.findall(r'\["(\w+)"\]', (REPO / "firmware" / "core" / "attribution.py")
                                     .read_text() + (REPO / "firmware" / "core" / "attribution_modes.py")
                                     .read_text()))  # fmt: skip


def _windows(seconds: float) -> int:
    return int(seconds / HOP + 0.5)


def place(name: str) -> str:
    """The attribute of Policy.settings that holds setting `name`, by the naming rule."""
    return name[:-2] if name.endswith("_s") else name


# Settings whose place or value the rule does not give: each with what the policy makes of it.
SPECIAL = {
    "pace_window_s": lambda s: [("pace_alpha", 2 / (_windows(s["pace_window_s"]) + 1))],
    # the smoothing span, and the median's length (1 when not median)
    "smoothing_windows": lambda s: [
        ("span", s["smoothing_windows"] * HOP + HOP / 2),
        ("median_k", s["smoothing_windows"] if s["smoothing"] == "median" else 1)],
    # firmware/core/policy.py _MEDIAN, _EMA, _NONE
    "smoothing": lambda s: [("smoothing", {"median": 0, "ema": 1, "none": 2}[s["smoothing"]])],
    "stress_from_unknown": lambda s: [
        ("stress_from_unknown", s["stress_from_unknown"] and not s["eu_mode"])],
    # counts of windows whose names say so, where `manager_rise` is taken by the rise itself
    "manager_rise_s": lambda s: [("manager_rise_after", _windows(s["manager_rise_s"]))],
    "baseline_s": lambda s: [("baseline_n", _windows(s["baseline_s"]))],
    "speaker_baseline_s": lambda s: [("speaker_baseline_n", _windows(s["speaker_baseline_s"]))],
    # the policy only needs to know whether it is counter attribution (firmware/core/policy.py
    # _heard)
    "attribution": lambda s: [("counter", s["attribution"] == "counter")],
}


def held(s: dict) -> dict[str, tuple[str, float | int]]:
    """Setting -> (the attribute of Policy.settings that holds it, the value it must hold); a
    setting held in two places adds "name/attribute" for the second."""
    out: dict[str, tuple[str, float | int]] = {}
    for r in rows():
        name, kind = r[0], r[1]
        if name not in READ_BY_POLICY:
            continue
        if name in SPECIAL:
            pairs = SPECIAL[name](s)
        elif kind == "duration":
            pairs = [(place(name), _windows(s[name]))]
        else:
            pairs = [(place(name), s[name])]
        for i, pair in enumerate(pairs):
            out[name if i == 0 else f"{name}/{pair[0]}"] = pair
    return out


SWITCHES = {place(r[0]) for r in rows() if r[1] == "bool" or isinstance(r[1], tuple)} | {"counter"}


def given(base: dict, flip: bool) -> dict:
    """`base` with a value for every other setting the policy reads: in its row's range and
    distinct from every other value (in windows for durations); switches off in one set, on in
    the other."""
    s = dict(base)
    taken = {v for _, v in held(validate_settings(s)[0]).values()}
    for r in rows():
        name, kind, _, lo, hi = r[:5]
        if name in s or name not in READ_BY_POLICY:
            continue
        if kind == "bool":
            s[name] = flip
            continue
        if isinstance(kind, tuple):
            s[name] = kind[-1] if flip else kind[0]
            continue
        if kind == "duration":
            options = [w * HOP for w in range(int(lo / HOP + 0.999), int(hi / HOP) + 1)
                       if w not in taken]  # fmt: skip
        elif kind == "int":
            options = [v for v in range(lo, hi + 1) if v not in taken]
        else:
            options = [v for v in (round(lo + (hi - lo) * k / 97, 6) for k in range(1, 97))
                       if v not in taken]  # fmt: skip
        s[name] = options[len(options) // 2]
        taken.add(_windows(s[name]) if kind == "duration" else s[name])
    return s


GIVEN = {"median": given(GIVEN_A, False), "none-eu": given(GIVEN_B, True)}
ATTRIBUTES = sorted(a for a, _ in held(validate_settings(GIVEN["median"])[0]).values())


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
    for given_ in GIVEN.values():
        assert validate_settings(given_)[1] == []
        values = [v for a, v in held(given_).values() if a not in SWITCHES]
        assert len(set(values)) == len(values)


def test_every_setting_is_read_by_the_policy_or_the_attribution() -> None:
    """A setting in firmware/core/cue_settings.py that nothing reads, or a name Policy.configure
    reads that is no setting (a typo or a removed row), fails here."""
    keys = {row[0] for row in rows()}
    assert READ_BY_POLICY <= keys, sorted(READ_BY_POLICY - keys)
    assert keys <= READ_BY_POLICY | READ_BY_ATTRIBUTION, sorted(
        keys - READ_BY_POLICY - READ_BY_ATTRIBUTION)
    assert set(SPECIAL) <= READ_BY_POLICY  # no rule left for a setting that is gone


def test_distinct_places() -> None:
    places = [a for a, _ in held(GIVEN["median"]).values()]
    assert len(set(places)) == len(places)


def test_a_drift_between_name_and_place_is_caught() -> None:
    """The comparison below can fail: two settings swapped after configure, as a slip in
    Policy.configure would swap them."""
    p = Policy(GIVEN["median"], rand_bytes=bytes)
    st = p.settings
    st.empathize_after, st.slow_down_after = st.slow_down_after, st.empathize_after
    want = {a: v for a, v in held(validate_settings(GIVEN["median"])[0]).values()}
    got = {a: v if isinstance(v, int) else v[0]
           for a, v in ((a, getattr(st, a)) for a in ATTRIBUTES)}  # fmt: skip
    assert {a for a in want if got[a] != want[a]} == {"empathize_after", "slow_down_after"}


@pytest.mark.parametrize("name", list(GIVEN))
def test_each_setting_in_its_place_on_both_interpreters(mpy, name: str) -> None:
    given_ = GIVEN[name]
    s = validate_settings(given_)[0]
    want = {a: v for a, v in held(s).values()}
    for interp, got in (
        ("cpython", _held_cpython(given_)),
        ("micropython", _held_micropython(mpy, given_)),
    ):
        assert got == want, interp
        for a in ("eu_mode", "stress_from_unknown"):
            assert isinstance(got[a], bool), (interp, a)
