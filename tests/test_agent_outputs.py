"""LED, motor and button of the Pi agent on gpiozero's mock PWM pins: the exact patterns."""

from __future__ import annotations

import time

import pytest
from agent_support import wait_until
from gpiozero.pins.mock import MockFactory, MockPWMPin

from firmware.core import cue_table
from firmware.pi.config import OutputSettings
from firmware.pi.outputs import PATTERNS, Outputs

R, G, B, MOTOR, BUTTON = 17, 27, 22, 12, 23
BRIGHT, HAPTIC = 0.6, 0.8


def levels(factory: MockFactory, pin: int) -> list[float]:
    """The values a pin went through, consecutive repeats folded, rounded."""
    out: list[float] = []
    for s in factory.pin(pin).states:
        v = round(float(s.state), 3)
        if not out or out[-1] != v:
            out.append(v)
    return out


@pytest.fixture
def rig():
    factory = MockFactory(pin_class=MockPWMPin)
    calls: list[object] = []
    settings = OutputSettings(brightness=BRIGHT, haptic_strength=HAPTIC, long_press_s=0.5,
                              enrol_press_s=2.0, button_bounce_s=0.0)
    out = Outputs.from_settings(
        settings,
        pin_factory=factory,
        on_ack=lambda: calls.append("ack"),
        on_mute=lambda m: calls.append(("mute", m)),
        on_enrol=lambda: calls.append("enrol"),
        speed=10.0,  # same sequence, ten times faster
    )
    yield out, factory, calls
    out.close()


def test_empathize_is_a_blue_double_blink_and_two_short_buzzes(rig):
    out, f, _ = rig
    out.show("empathize")
    time.sleep(0.02)
    assert out.idle(3)
    assert levels(f, B) == [0, BRIGHT, 0, BRIGHT, 0]
    assert levels(f, R) == [0] and levels(f, G) == [0]
    assert levels(f, MOTOR) == [0, HAPTIC, 0, HAPTIC, 0]


def test_slow_down_is_two_amber_pulses_and_one_long_buzz(rig):
    out, f, _ = rig
    out.show("slow_down")
    time.sleep(0.02)
    assert out.idle(3)
    red, green = levels(f, R), levels(f, G)
    assert len(red) == len(green)
    c = cue_table.find("slow_down")[2]  # amber: green about half of red
    ratio = (c >> 8 & 255) / (c >> 16)
    assert 0.4 < ratio < 0.6
    assert all(abs(g - r * ratio) < 1e-3 for r, g in zip(red, green, strict=True))
    assert max(red) == BRIGHT and levels(f, B) == [0]
    peaks = sum(1 for i in range(1, len(red) - 1) if red[i - 1] < red[i] > red[i + 1])
    assert peaks == 2 and red[-1] == 0
    assert levels(f, MOTOR) == [0, HAPTIC, 0]


def test_call_manager_repeats_until_acknowledged_by_a_short_press(rig):
    out, f, calls = rig
    out.show("call_manager")
    # one pass is 3.0 s (0.3 s here): wait for the first blink of the second pass
    assert wait_until(lambda: len(levels(f, R)) >= 8)
    assert out.playing == "call_manager"
    f.pin(BUTTON).drive_low()
    f.pin(BUTTON).drive_high()
    assert out.idle(2)
    red = levels(f, R)
    assert red[:7] == [0, BRIGHT] * 3 + [0] and red[7] == BRIGHT  # three blinks, then again
    assert red[-1] == 0 and levels(f, G) == [0] and levels(f, B) == [0]
    motor = levels(f, MOTOR)
    assert motor[:7] == [0, HAPTIC] * 3 + [0] and motor[-1] == 0
    assert calls == ["ack"]
    n = len(f.pin(R).states)
    time.sleep(0.4)
    assert len(f.pin(R).states) == n  # stopped for good


def test_long_press_mutes_and_muted_cues_stay_dark(rig):
    out, f, calls = rig
    f.pin(BUTTON).drive_low()
    time.sleep(0.7)  # past long_press_s (a faint tick at 0.5 s says "you may let go")
    f.pin(BUTTON).drive_high()
    assert calls == [("mute", True)] and out.muted
    assert out.idle(2)
    white = [0, 0.2 * BRIGHT, 0, 0.5 * BRIGHT, 0]  # the tick, then the mute blink
    assert levels(f, R) == levels(f, G) == levels(f, B) == [round(v, 3) for v in white]
    n = {p: len(f.pin(p).states) for p in (R, G, B, MOTOR)}
    out.show("call_manager")
    time.sleep(0.1)
    assert {p: len(f.pin(p).states) for p in (R, G, B, MOTOR)} == n  # nothing lit or buzzed


def test_holding_longer_starts_the_enrolment_not_mute(rig):
    out, f, calls = rig
    f.pin(BUTTON).drive_low()
    time.sleep(2.1)  # past enrol_press_s
    f.pin(BUTTON).drive_high()
    assert calls == ["enrol"] and not out.muted


def test_holding_the_button_does_not_hide_a_manager_call(rig):
    out, f, calls = rig
    out.show("call_manager")
    f.pin(BUTTON).drive_low()
    time.sleep(0.6)  # a hold tick would be due now
    assert out.playing == "call_manager"
    f.pin(BUTTON).drive_high()  # released as a mute: the manager call is still not acknowledged
    assert calls == [("mute", True)]


def test_microphone_fault_blinks_magenta_until_cleared(rig):
    out, f, _ = rig
    out.set_fault(True)
    assert wait_until(lambda: len(levels(f, R)) >= 5)  # two 0.2 s passes at speed 10
    assert out.playing == "fault"
    out.set_fault(False)
    assert out.idle(2)
    red, blue = levels(f, R), levels(f, B)
    assert red == blue and red[:5] == [0, BRIGHT, 0, BRIGHT, 0] and red[-1] == 0
    assert levels(f, G) == [0] and levels(f, MOTOR) == [0]  # no buzz for a fault


def test_every_cue_has_a_distinct_pattern():
    cues = cue_table.names()
    assert set(cues) <= set(PATTERNS)
    signatures = {(PATTERNS[c].color, PATTERNS[c].led, PATTERNS[c].motor) for c in cues}
    assert len(signatures) == len(cues)
    with pytest.raises(ValueError, match="no pattern"):
        Outputs(OutputSettings()).show("dance")


def test_contact_bounce_gives_one_acknowledgement():
    factory = MockFactory(pin_class=MockPWMPin)
    calls: list[str] = []
    out = Outputs.from_settings(OutputSettings(button_bounce_s=0.05), pin_factory=factory,
                                on_ack=lambda: calls.append("ack"))
    try:
        pin = factory.pin(BUTTON)
        for _ in range(3):  # a bouncing contact: three make/break pairs within a few ms
            pin.drive_low()
            pin.drive_high()
        assert calls == ["ack"]
        time.sleep(0.1)
        pin.drive_low()
        pin.drive_high()
        assert calls == ["ack", "ack"]  # a second, real press
    finally:
        out.close()
