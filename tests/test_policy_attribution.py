"""Speaker attribution (firmware/core/attribution.py): headset near field and counter enrolment,
labels identical on CPython and the MicroPython unix port."""

from __future__ import annotations

import json

import pytest

from firmware.core.attribution import HeadsetAttribution
from firmware.core.attribution_modes import (
    AttributionError,
    CounterAttribution,
    NoAttribution,
    make_attribution,
)

# Deterministic wobble (no RNG, so both interpreters see the same windows).
WOBBLE = (0.0, 1.0, -0.5, 0.5, -1.0, 0.25, -0.25)


def voice(n: int, f0: float, db: float, f0_spread: float = 8.0, db_spread: float = 1.5):
    return [
        (0.85, db + db_spread * WOBBLE[i % 7], f0 + f0_spread * WOBBLE[(i * 3) % 7])
        for i in range(n)
    ]


STAFF = voice(40, 120.0, -28.0)  # a lower voice, nearer the counter mic
CUSTOMER = voice(40, 210.0, -35.0)
CUSTOMER_SHOUTING = voice(20, 260.0, -22.0)


def enrolled() -> CounterAttribution:
    a = CounterAttribution()
    for w in voice(32, 118.0, -28.5):  # 8 s of the staff member alone at shift start
        a.enrol(*w)
    a.finish_enrolment()
    return a


def share(labels: list[str], who: str) -> float:
    return labels.count(who) / len(labels)


def test_counter_tells_staff_from_customer_after_enrolment() -> None:
    a = enrolled()
    staff = [a.process(*w) for w in STAFF]
    customer = [a.process(*w) for w in CUSTOMER]
    shouting = [a.process(*w) for w in CUSTOMER_SHOUTING]
    assert share(staff, "staff") >= 0.9 and "customer" not in staff
    assert share(customer, "customer") >= 0.9 and "staff" not in customer
    assert "staff" not in shouting  # louder than the staff, but not their voice


def test_counter_says_unknown_before_enrolment_and_when_unsure() -> None:
    a = CounterAttribution()
    assert {a.process(*w) for w in STAFF + CUSTOMER} == {"unknown"}
    a = enrolled()
    # A voice just outside the staff member's pitch range and a little quieter: unknown.
    assert a.process(0.85, -31.0, 150.0) == "unknown"
    assert a.process(0.1, -28.0, 120.0) == "unknown"  # too little speech in the window
    a.forget()
    assert a.process(*STAFF[0]) == "unknown"


def test_counter_enrolment_too_short_says_what_to_do() -> None:
    a = CounterAttribution()
    for w in voice(8, 120.0, -28.0):
        a.enrol(*w)
    with pytest.raises(AttributionError, match=r"heard 2\.0 s .* needs 5\.0 s: keep talking"):
        a.finish_enrolment()


def test_headset_near_field_wearer() -> None:
    a = HeadsetAttribution({"headset_wearer_db": -30.0})
    wearer = [a.process(*w) for w in voice(40, 120.0, -29.0)]
    customer = [a.process(*w) for w in voice(40, 210.0, -50.0)]
    shouting = [a.process(*w) for w in voice(20, 260.0, -38.0)]
    assert share(wearer, "staff") == 1.0
    assert share(customer, "customer") == 1.0
    assert "staff" not in shouting
    # A far-field customer getting louder stays the customer short of the wearer's level...
    assert share(shouting, "customer") == 1.0
    assert [a.process(*w) for w in voice(10, 250.0, -40.0)] == ["customer"] * 10
    # ...and the wearer speaking up (louder than their learned level) stays the wearer.
    assert share([a.process(*w) for w in voice(20, 140.0, -22.0)], "staff") == 1.0


def test_headset_learns_a_different_mic_gain_within_limits() -> None:
    a = HeadsetAttribution({"headset_wearer_db": -30.0})
    for w in voice(120, 120.0, -22.0):  # this unit's mic is 8 dB hotter
        a.process(*w)
    assert -24.0 <= a.wearer_db <= -21.0
    assert a.process(0.85, -38.0, 200.0) == "customer"  # 16 dB below the wearer
    for w in voice(400, 120.0, 0.0):  # nonsense levels cannot drag it away
        a.process(*w)
    assert a.wearer_db <= -18.0
    a.forget()  # a new audio stream (the headset pipeline after mute)
    assert a.wearer_db == -30.0


def learnt_wearer(f0: float = 120.0, db: float = -30.0) -> HeadsetAttribution:
    a = HeadsetAttribution({"headset_wearer_db": -30.0})
    for w in voice(24, f0, db):  # 6 s of the wearer talking
        assert a.process(*w) == "staff"
    return a


def st_from(f0: float, st: float) -> float:
    return f0 * 2 ** (st / 12)


def test_headset_loud_customer_far_from_the_wearers_pitch_is_the_customer() -> None:
    # A customer shouting as loud as the wearer's mouth (or louder): the level cannot tell them
    # apart, the wearer's learnt pitch can. Level alone read all of these as the wearer.
    a = learnt_wearer(120.0)
    higher = [a.process(*w) for w in voice(20, 220.0, -26.0)]  # +10.5 st, 4 dB louder
    assert higher == ["customer"] * 20
    # Below the wearer's pitch there is no speaking-up allowance: 6 st lower at their level.
    assert a.process(0.85, -30.0, st_from(120.0, -6.0)) == "customer"
    # The shouting neither moved the wearer's level nor their pitch.
    assert a.wearer_db < -29.0 and abs(a.wearer_hz - 120.0) < 3.0
    # A male customer shouting at a female wearer.
    b = learnt_wearer(210.0, -31.0)
    assert [b.process(*w) for w in voice(12, 110.0, -27.0)] == ["customer"] * 12


def test_headset_wearer_speaking_up_stays_the_wearer() -> None:
    a = learnt_wearer(120.0)
    # Their own spread at their level: within pitch_tol_st + 2 (5 st) either way.
    assert a.process(0.85, -30.0, st_from(120.0, 4.5)) == "staff"
    assert a.process(0.85, -31.0, st_from(120.0, -4.5)) == "staff"
    # Speaking up 6 dB lifts the pitch too: +7.5 st is still the wearer (5 + 0.5 per dB)...
    assert a.process(0.85, -24.0, st_from(120.0, 7.5)) == "staff"
    # ...but not at their usual level, and a louder voice buys at most level_tol_db/2 = 3 st.
    a = learnt_wearer(120.0)
    assert a.process(0.85, -30.0, st_from(120.0, 6.5)) == "customer"
    assert a.process(0.85, -18.0, st_from(120.0, 8.5)) == "customer"
    # Unvoiced near-field windows (no pitch) stay the wearer's, as by level alone.
    assert a.process(0.85, -22.0, 0.0) == "staff"


def test_headset_lively_wearer_gets_a_wider_pitch_range() -> None:
    # As the counter's enrolment: a voice that moves around its mean (here 80-160 Hz window to
    # window) keeps two of its own standard deviations, 2 semitones beyond that is another voice.
    steady = learnt_wearer(120.0)
    lively = HeadsetAttribution({"headset_wearer_db": -30.0})
    for w in voice(40, 120.0, -30.0, f0_spread=40.0):
        lively.process(*w)
    up7 = (0.85, -30.0, st_from(120.0, 7.0))
    assert steady.process(*up7) == "customer"
    assert lively.process(*up7) == "staff"
    assert lively.process(0.85, -30.0, st_from(120.0, 14.0)) == "customer"


def test_headset_customer_at_the_wearers_pitch_is_read_as_the_wearer() -> None:
    # The stated limit: a customer whose pitch is within the wearer's range (a similar voice,
    # often the same sex) and who is as loud as the wearer's mouth is read as the wearer, as
    # with level alone. A far-field one stays the customer.
    a = learnt_wearer(120.0)
    assert a.process(0.85, -27.0, 128.0) == "staff"
    assert a.process(0.85, -45.0, 128.0) == "customer"


def test_headset_learns_the_pitch_only_from_near_field_speech() -> None:
    a = HeadsetAttribution({"headset_wearer_db": -30.0})
    for w in voice(40, 220.0, -50.0):  # a far-field customer before the wearer says a word
        assert a.process(*w) == "customer"
    for w in voice(6, 220.0, -34.5, db_spread=0.0):  # within near_field_db/2, not /4
        assert a.process(*w) == "staff"
    assert a.wearer_hz == 0.0  # nothing learnt yet: level alone decides
    for w in voice(7, 120.0, -30.0):
        a.process(*w)
    assert a.wearer_hz == 0.0  # 1.75 s of the wearer: not yet
    a.process(0.85, -30.0, 120.0)
    assert abs(a.wearer_hz - 120.0) < 3.0
    assert a.process(0.85, -30.0, 220.0) == "customer"
    a.forget()  # a new audio stream: the pitch is learnt again
    assert a.wearer_hz == 0.0 and a.process(0.85, -30.0, 220.0) == "staff"


def test_headset_pitch_rule_identical_on_micropython(mpy) -> None:
    # Learning a steady and (after forget()) a lively wearer, each followed by a grid over the
    # pitch range's edges (-8..+10 st, 0..+14 dB above the wearer, voiced and not): the same
    # labels and learnt figures after each window on both interpreters.
    learn = voice(12, 120.0, -30.0) + voice(6, 200.0, -50.0)
    lively = voice(12, 120.0, -30.0, f0_spread=40.0)
    grid = [
        (0.85, -30.0 + db, st_from(120.0, st) if st is not None else 0.0)
        for db in range(0, 15, 2)
        for st in (None, -8, -5.5, -4.5, 0, 4.5, 5.5, 6.5, 7.5, 8.5, 10)
    ]
    passes = [learn + grid + [(0.2, -30.0, 120.0)], lively + grid]
    code = (
        "import json\n"
        "from firmware.core.attribution import HeadsetAttribution\n"
        "h = HeadsetAttribution({'headset_wearer_db': -30.0})\n"
        "out = []\n"
        f"for ws in {passes!r}:\n"
        "    for w in ws:\n"
        "        out.append([h.process(*w), h.wearer_db, h.wearer_hz])\n"
        "    h.forget()\n"
        "print(json.dumps(out))\n"
    )
    got = json.loads(mpy(code, heapsize="512K").stdout.strip().splitlines()[-1])
    h = HeadsetAttribution({"headset_wearer_db": -30.0})
    want = []
    for ws in passes:
        for w in ws:
            want.append([h.process(*w), h.wearer_db, h.wearer_hz])
        h.forget()
    assert [g[0] for g in got] == [x[0] for x in want]
    assert {"staff", "customer", "unknown"} <= {x[0] for x in want}
    for g, x in zip(got, want, strict=True):
        assert g[1] == pytest.approx(x[1], abs=1e-9) and g[2] == pytest.approx(x[2], abs=1e-6)


def test_headset_modules_load_only_what_the_headset_runs() -> None:
    # The counter/none modes live in firmware/core/attribution_modes.py; the headset imports only
    # firmware.core.attribution, which does not reach them (no module __getattr__ forwarding).
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from firmware.core.attribution import HeadsetAttribution\n"
        "from firmware.core.policy import Policy\n"
        "HeadsetAttribution({}); Policy({}, bytes)\n"
        "print(sorted(m for m in sys.modules if m.startswith('firmware.')))\n"
        "import firmware.core.attribution\n"
        "print(hasattr(firmware.core.attribution, 'CounterAttribution'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    loaded = eval(out[0])  # noqa: S307 (a list literal printed by the child)
    assert "firmware.core.attribution_modes" not in loaded
    assert out[1] == "False"  # no forwarding: the counter modes are in attribution_modes


def test_make_attribution_follows_settings() -> None:
    assert isinstance(make_attribution({"attribution": "headset"}), HeadsetAttribution)
    assert isinstance(make_attribution({}), CounterAttribution)
    assert make_attribution({"attribution": "none"}).process(0.9, -20.0, 150.0) == "unknown"
    assert isinstance(make_attribution({"attribution": "none"}), NoAttribution)


def test_labels_identical_on_micropython(mpy) -> None:
    windows = STAFF + CUSTOMER + CUSTOMER_SHOUTING + [(0.85, -31.0, 140.0), (0.85, -45.0, 0.0)]
    enrol = voice(32, 118.0, -28.5)
    code = (
        "import json\n"
        "from firmware.core.attribution import HeadsetAttribution\n"
        "from firmware.core.attribution_modes import CounterAttribution\n"
        "c = CounterAttribution()\n"
        f"for w in {enrol!r}:\n    c.enrol(*w)\n"
        "c.finish_enrolment()\n"
        "h = HeadsetAttribution({'headset_wearer_db': -30.0})\n"
        f"ws = {windows!r}\n"
        "print(json.dumps([[c.process(*w) for w in ws], [h.process(*w) for w in ws]]))\n"
    )
    got = json.loads(mpy(code).stdout.strip().splitlines()[-1])
    c = CounterAttribution()
    for w in enrol:
        c.enrol(*w)
    c.finish_enrolment()
    h = HeadsetAttribution({"headset_wearer_db": -30.0})
    assert got == [[c.process(*w) for w in windows], [h.process(*w) for w in windows]]


def test_counter_raised_staff_voice_stays_staff() -> None:
    a = enrolled()  # staff around 118 Hz, -28.5 dBFS
    # Speaking up by 6 dB lifts the pitch too (Lombard): +4 semitones is still the staff member.
    assert a.process(0.85, -22.5, 118.0 * 2 ** (4 / 12)) == "staff"
    # The same pitch at the enrolled level is not.
    assert a.process(0.85, -28.5, 118.0 * 2 ** (4 / 12)) == "unknown"
    # A clearly different voice stays the customer however loud it gets.
    assert a.process(0.85, -15.0, 260.0) == "customer"


def test_counter_loud_voice_is_not_staff_for_being_loud() -> None:
    a = enrolled()  # staff around 118 Hz, -28.5 dBFS, pitch tolerance 3 semitones
    st = 2 ** (1 / 12)
    # A customer of the staff member's pitch shouting 12 dB above the enrolled level: no staff
    # member speaks up that much at their own counter, the customer does.
    assert a.process(0.85, -16.5, 118.0 * st**2) == "customer"
    assert a.process(0.85, -16.5, 0.0) == "customer"  # unvoiced, as loud
    # 8 dB up, past the level a staff member speaking up reaches: not staff; the customer once
    # 2 semitones above the widest staff range (3 + 3 semitones).
    assert a.process(0.85, -20.5, 118.0 * st**8.5) == "customer"
    assert a.process(0.85, -20.5, 118.0 * st**4) == "unknown"
    # Speaking up by 3.4 dB with the pitch 5.3 semitones up (the demo's hurried staff turn):
    # not far enough outside the raised staff range to be called the customer.
    assert a.process(0.85, -25.1, 118.0 * st**5.3) == "unknown"


def test_counter_staff_speaking_up_gets_slow_down() -> None:
    # The staff voice raised by 5 dB and 2.5 semitones while the customer is tense: the
    # attribution keeps it "staff", so the policy nudges the staff member (mirroring).
    from firmware.core.policy import Policy
    from firmware.host.policy_replay import CountingRandom

    a = enrolled()
    p = Policy(rand_bytes=CountingRandom())
    t = 0.0
    cues = []
    turns = [(STAFF[:12], 0.2, 4.0), (CUSTOMER[:12], 0.3, 4.0), (STAFF[12:24], 0.2, 4.0),
             (CUSTOMER[12:24], 0.55, 4.5),
             ([(s, db + 5.0, f0 * 2 ** (2.5 / 12)) for s, db, f0 in STAFF[24:40]], 0.3, 5.0)]
    labels = []
    for voice_windows, score, rate in turns:
        for w in voice_windows:
            t += 0.25
            who = a.process(*w)
            labels.append(who)
            cues += [d["cue"] for d in p.step(t, score, who, rate, w[1], w[0]) if d["type"] == "cue"]
    assert "customer" not in labels[-16:] and labels[-16:].count("staff") >= 10
    assert "slow_down" in cues


def test_counter_level_and_pitch_edges_identical_on_micropython(mpy) -> None:
    # A grid over the staff band's edges: level -12..+14 dB around the enrolment, pitch -6..+10
    # semitones, voiced and unvoiced; same labels on both interpreters.
    windows = [
        (0.85, -28.5 + db, 118.0 * 2 ** (st / 12) if st is not None else 0.0)
        for db in range(-12, 15, 2)
        for st in (None, -6, -4, -2, 0, 2, 3.5, 4.5, 5.5, 7, 8.5, 10)
    ]
    enrol = voice(32, 118.0, -28.5)
    code = (
        "import json\n"
        "from firmware.core.attribution_modes import CounterAttribution\n"
        "c = CounterAttribution()\n"
        f"for w in {enrol!r}:\n    c.enrol(*w)\n"
        "c.finish_enrolment()\n"
        f"print(json.dumps([c.process(*w) for w in {windows!r}]))\n"
    )
    got = json.loads(mpy(code).stdout.strip().splitlines()[-1])
    a = enrolled()
    want = [a.process(*w) for w in windows]
    assert got == want and {"staff", "customer", "unknown"} <= set(want)
