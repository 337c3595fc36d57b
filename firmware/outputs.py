# Cue patterns on the LED and the vibration motor, advanced by tick(now_ms) from the main loop or
# a timer: nothing here sleeps, so the audio loop is never held up. Hardware is written only when
# the pattern changes step.
#
# Patterns are discreet and distinct (PRODUCT.md): amber slow pulse + one long buzz = slow down;
# blue double blink + two short = empathize; red + three short, repeating until acknowledged =
# call manager; a short green = settled.

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_MANAGER_REPEAT_MS = const(4000)
_MANAGER_GIVE_UP_MS = const(120000)  # stop nagging the wearer; the companion escalates anyway

_OFF = (0, 0, 0)
_AMBER = (255, 120, 0)
_BLUE = (0, 60, 255)
_RED = (255, 0, 0)
_GREEN = (0, 200, 40)
_WHITE = (200, 200, 200)
_VIOLET = (120, 0, 200)

# step = (duration_ms, colour, motor on)
PATTERNS = {
    "slow_down": ((700, _AMBER, 1), (700, _OFF, 0), (700, _AMBER, 0), (700, _OFF, 0)),
    "empathize": ((150, _BLUE, 1), (150, _OFF, 0), (150, _BLUE, 1), (150, _OFF, 0)),
    "call_manager": (
        (150, _RED, 1), (150, _RED, 0), (150, _RED, 1), (150, _RED, 0), (150, _RED, 1),
        (1000, _RED, 0), (100, _OFF, 0),
    ),
    "settled": ((300, _GREEN, 0), (10, _OFF, 0)),
    "ack": ((120, _WHITE, 0), (10, _OFF, 0)),
    "mute": ((600, _VIOLET, 0), (10, _OFF, 0)),
    "unmute": ((150, _VIOLET, 0), (150, _OFF, 0), (150, _VIOLET, 0), (10, _OFF, 0)),
}


class RgbLed:
    """One RGB LED: a WS2812 (`neopixel.NeoPixel` with one pixel) or three PWM channels."""

    def __init__(self, pixel=None, pwms=None):
        self._pixel = pixel
        self._pwms = pwms

    def set(self, r, g, b):
        if self._pixel is not None:
            self._pixel[0] = (r, g, b)
            self._pixel.write()
        else:
            for pwm, v in zip(self._pwms, (r, g, b)):
                pwm.duty_u16(v * 257)


class Motor:
    """Coin vibration motor behind a transistor, strength by PWM duty."""

    def __init__(self, pwm):
        self._pwm = pwm

    def set(self, strength):
        self._pwm.duty_u16(int(strength * 65535))


class Outputs:
    def __init__(self, led, motor, brightness=0.3, haptic=0.7):
        self.led = led
        self.motor = motor
        self.brightness = brightness
        self.haptic = haptic
        self.playing = None  # name of the pattern being shown
        self._steps = None
        self._level = 1
        self._start = 0
        self._repeat_until = 0
        self._shown = None  # (colour, motor) currently on the hardware
        self.shown_count = 0  # patterns started since boot (telemetry/tests)
        led.set(0, 0, 0)
        motor.set(0)

    def show(self, name, now_ms, level=1):
        """Start a pattern. call_manager repeats until acknowledge() or it gives up."""
        if self.playing == "call_manager" and name not in ("call_manager", "ack", "mute"):
            return  # the most urgent cue stays on until the wearer acknowledges it
        self.playing = name
        self._steps = PATTERNS[name]
        self._level = level
        self._start = now_ms
        self._repeat_until = now_ms + _MANAGER_GIVE_UP_MS if name == "call_manager" else 0
        self.shown_count += 1
        self.tick(now_ms)

    def acknowledge(self, now_ms):
        """Short press: stop a repeating cue, confirm with a short white blink."""
        was = self.playing
        self.playing = None
        self.show("ack", now_ms)
        return was

    def _apply(self, colour, motor_on):
        if self._shown == (colour, motor_on):
            return
        self._shown = (colour, motor_on)
        # Level 1-3 raises brightness a little: a stronger cue is slightly more visible.
        k = self.brightness * (0.6 + 0.2 * self._level)
        if k > 1:
            k = 1
        self.led.set(int(colour[0] * k), int(colour[1] * k), int(colour[2] * k))
        self.motor.set(self.haptic if motor_on else 0)

    def tick(self, now_ms):
        steps = self._steps
        if steps is None:
            return
        t = now_ms - self._start
        if self._repeat_until:
            if now_ms >= self._repeat_until:
                self._stop()
                return
            t %= _MANAGER_REPEAT_MS
        for dur, colour, motor_on in steps:
            if t < dur:
                self._apply(colour, motor_on)
                return
            t -= dur
        if self._repeat_until:
            self._apply(_OFF, 0)
            return
        self._stop()

    def _stop(self):
        self._steps = None
        self.playing = None
        self._apply(_OFF, 0)
