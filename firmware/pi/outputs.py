"""What the staff member sees and feels: RGB LED and vibration motor patterns, and the button.

The patterns are the rows of firmware/core/cue_table.py, the same ones the headset plays (the cues,
then the signals: button feedback, the microphone fault, the enrolment), played by one
background thread, so the tests can read the exact sequence off gpiozero's mock PWM pins.

Brightness and haptic strength scale every level. Button, judged on release: a short press
acknowledges (stops a repeating pattern); held for outputs.long_press_s toggles mute; held for
outputs.enrol_press_s starts the counter enrolment (the staff member then talks alone for a few
seconds). Muted: cues are not shown or felt (events are still sent, the manager still needs
them); the fault and button-feedback patterns still show.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware.core import cue_table
from firmware.pi.config import OutputSettings

log = logging.getLogger("calmcue.agent.outputs")

Color = tuple[float, float, float]


@dataclass(frozen=True)
class Pattern:
    color: Color
    led: tuple[tuple[float, float], ...]  # (level 0..1, seconds) steps
    motor: tuple[tuple[float, float], ...] = ()  # (strength 0..1, seconds) steps
    repeat: bool = False  # until acknowledged (cues) or cleared (fault)
    haptic: bool = True  # False: LED only
    period: float = 0.0  # seconds from one start to the next when repeating


# The agent's own signals, beside the cue table's cues and signals, in the same shape (name,
# level 0, colour, LED pct on off times, motor pct on off times, repeat_ms, label).
# fmt: off
PI_SIGNALS = (
    ("hold",      0, 0xFFFFFF,  20, 100,   0, 1,  0, 0, 0, 0,    0, "Button held"),
    ("fault",     0, 0xFF00FF, 100, 100,   0, 1,  0, 0, 0, 0, 2000, "Microphone missing"),
    ("enrolling", 0, 0xFFFFFF,  30, 750,   0, 1,  0, 0, 0, 0, 1500, "Learning the staff voice"),
    ("enrolled",  0, 0x00FF00,  50, 400, 300, 2,  0, 0, 0, 0,    0, "Staff voice learnt"),
)
# fmt: on


def _steps(pct: int, on: int, off: int, times: int) -> tuple[tuple[float, float], ...]:
    # `times` blinks of on ms at pct %, each followed by off ms dark -> ((level 0..1, s), ...)
    blink = ((pct / 100, on / 1000),) + (((0.0, off / 1000),) if off else ())
    return blink * times


def _pattern(row: tuple[Any, ...]) -> Pattern:
    """A firmware/core/cue_table.py row as the player's Pattern (levels 0..1, seconds)."""
    _, _, c, led_pct, led_on, led_off, led_n, pct, on, off, n, repeat_ms, _ = row
    motor = _steps(pct, on, off, n)
    return Pattern(
        color=((c >> 16) / 255, (c >> 8 & 255) / 255, (c & 255) / 255),
        led=_steps(led_pct, led_on, led_off, led_n),
        motor=motor,
        repeat=repeat_ms > 0,
        haptic=bool(motor),
        period=repeat_ms / 1000,
    )


PATTERNS: dict[str, Pattern] = {
    row[0]: _pattern(row) for row in [*cue_table.rows(), *cue_table.rows(signals=True), *PI_SIGNALS]
}
CUES = frozenset(cue_table.names())


def timeline(pattern: Pattern) -> list[tuple[float, str, float]]:
    """One pass of a pattern as (at_s, 'led'|'motor', level), in time order."""
    out: list[tuple[float, str, float]] = []
    for target, steps in (("led", pattern.led), ("motor", pattern.motor if pattern.haptic else ())):
        at = 0.0
        for level, dur in steps:
            out.append((at, target, level))
            at += dur
        if steps:
            out.append((at, target, 0.0))  # off after the last step
    out.sort(key=lambda e: (e[0], e[1]))
    return out


def _length(pattern: Pattern) -> float:
    if pattern.repeat:
        return pattern.period
    return max(sum(d for _, d in pattern.led), sum(d for _, d in pattern.motor))


class Outputs:
    """Plays patterns on an RGBLED and a PWM motor (gpiozero devices, passed in or built from
    settings), and turns button presses into `on_ack()` / `on_mute(muted)` calls."""

    def __init__(
        self,
        settings: OutputSettings,
        led: Any = None,
        motor: Any = None,
        button: Any = None,
        on_ack: Callable[[], None] | None = None,
        on_mute: Callable[[bool], None] | None = None,
        on_enrol: Callable[[], None] | None = None,
        speed: float = 1.0,
    ):
        self.settings = settings
        self.led = led
        self.motor = motor
        self.button = button
        self.on_ack = on_ack
        self.on_mute = on_mute
        self.on_enrol = on_enrol
        self.speed = speed  # tests play patterns faster; the sequence is the same
        self.muted = False
        self.fault = False
        self.playing: str | None = None
        self._request: str | None = None
        self._wake = threading.Event()
        self._closed = False
        self._pressed_at: float | None = None
        self._last_release = -1e9
        if button is not None:
            button.hold_time = settings.long_press_s
            button.hold_repeat = True
            button.when_pressed = self._pressed_cb
            button.when_held = self._held_cb
            button.when_released = self._released_cb
        self._thread = threading.Thread(target=self._run, name="calmcue-outputs", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: OutputSettings, pin_factory: Any = None, **kw: Any) -> Outputs:
        from gpiozero import RGBLED, Button, PWMOutputDevice

        r, g, b = settings.led_pins
        led = RGBLED(
            r, g, b, active_high=settings.led_active_high, pwm=True, pin_factory=pin_factory
        )
        motor = (
            PWMOutputDevice(settings.motor_pin, pin_factory=pin_factory)
            if settings.motor_pin is not None
            else None
        )
        button = (
            Button(
                settings.button_pin,
                pull_up=True,
                hold_time=settings.long_press_s,
                pin_factory=pin_factory,
            )
            if settings.button_pin is not None
            else None
        )
        return cls(settings, led, motor, button, **kw)

    # --- what the agent calls ----------------------------------------------------------------

    def show(self, name: str) -> None:
        """Play the pattern for a cue (or 'fault', 'mute', 'unmute'); a new one interrupts."""
        if name not in PATTERNS:
            raise ValueError(f"no pattern for {name!r}")
        if self.muted and name in CUES:
            return
        self._request = name
        self._wake.set()

    def ack(self) -> None:
        """Stop a repeating cue pattern (the button does this)."""
        if any(n in CUES and PATTERNS[n].repeat for n in (self.playing, self._request) if n):
            self._request = "fault" if self.fault else None
            self._wake.set()

    def set_fault(self, fault: bool) -> None:
        if fault == self.fault:
            return
        self.fault = fault
        if fault and self.playing is None:
            self.show("fault")
        elif not fault and (self.playing == "fault" or self._request == "fault"):
            self._request = None
            self._wake.set()

    def set_muted(self, muted: bool) -> None:
        if muted == self.muted:
            return
        self.muted = muted
        self._request = "mute" if muted else "unmute"
        self._wake.set()

    def update(self, settings: OutputSettings) -> None:
        self.settings = settings

    def idle(self, timeout: float = 5.0) -> bool:
        """Wait until no pattern is playing (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.playing is None and self._request is None and not self._wake.is_set():
                return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(2)
        self._off()
        for dev in (self.led, self.motor, self.button):
            if dev is not None:
                dev.close()

    # --- button --------------------------------------------------------------------------------

    def _pressed_cb(self) -> None:
        self._pressed_at = time.monotonic()

    def _held_cb(self) -> None:
        # A tick every long_press_s so the staff member can count to release; never over a
        # manager call or a fault, which must keep showing.
        if self.playing is None or (self.playing not in CUES and not PATTERNS[self.playing].repeat):
            self.show("hold")

    def _released_cb(self) -> None:
        # Debounced here rather than by the pin library, so it behaves the same on every one.
        now = time.monotonic()
        last, self._last_release = self._last_release, now
        if now - last < self.settings.button_bounce_s:
            return
        held = now - self._pressed_at if self._pressed_at is not None else 0.0
        self._pressed_at = None
        if held >= self.settings.enrol_press_s:
            if self.on_enrol:
                self.on_enrol()
        elif held >= self.settings.long_press_s:
            self.set_muted(not self.muted)
            if self.on_mute:
                self.on_mute(self.muted)
        else:
            self.ack()
            if self.on_ack:
                self.on_ack()

    # --- player --------------------------------------------------------------------------------

    def _off(self) -> None:
        if self.led is not None:
            self.led.color = (0.0, 0.0, 0.0)
        if self.motor is not None:
            self.motor.value = 0.0

    def _apply(self, pattern: Pattern, target: str, level: float) -> None:
        if target == "led" and self.led is not None:
            k = level * self.settings.brightness
            self.led.color = (pattern.color[0] * k, pattern.color[1] * k, pattern.color[2] * k)
        elif target == "motor" and self.motor is not None:
            self.motor.value = level * self.settings.haptic_strength

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            name, self._request = self._request, None
            if name is None:
                self._off()
                continue
            self.playing = name
            interrupted = self._play(PATTERNS[name])
            self._off()
            self.playing = None
            if not interrupted and self.fault and self._request is None:
                self._request = "fault"
                self._wake.set()

    def _play(self, pattern: Pattern) -> bool:
        """Play once, or until interrupted when repeating; True if interrupted."""
        steps = timeline(pattern)
        length = _length(pattern)
        while True:
            t = 0.0
            for at, target, level in steps:
                if at > t:
                    if self._wake.wait((at - t) / self.speed):
                        return True
                    t = at
                self._apply(pattern, target, level)
            if length > t and self._wake.wait((length - t) / self.speed):
                return True
            if not pattern.repeat:
                return False
