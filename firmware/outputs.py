# Cue patterns on the LED and the vibration motor, advanced by tick(now_ms) from the main loop or
# a timer: nothing here sleeps, so the audio loop is never held up. Hardware is written only when
# the pattern changes step.
#
# Patterns are discreet and distinct (PRODUCT.md): amber slow pulse + one long buzz = slow down;
# blue double blink + two short = empathize; red + three short, repeating until acknowledged =
# call manager; a short green = settled.
#
# RAM (the unix port's heap is the yardstick, docs/firmware.md): the patterns are one text
# constant, decoded when a cue starts into one int array allocated at init (so the heap is the
# same whether a cue is playing or not: no leak check is confused by it), instead of a dict of tuples of
# tuples (each a heap object of >= 32 B); colours are 0xRRGGBB ints; the tables are const(), so
# MicroPython inlines them into show() and the module's globals hold no names for them; the motor
# is an RgbLed with one channel, so there are two classes.

from array import array

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_MANAGER_REPEAT_MS = const(4000)
_MANAGER_GIVE_UP_MS = const(120000)  # stop nagging the wearer; the companion escalates anyway

# Colour letters of the table below, in the order of _COLOURS.
_LETTERS = const("-abrgwv")
#           off       amber     blue      red       green     white     violet
_COLOURS = const((0x000000, 0xFF7800, 0x003CFF, 0xFF0000, 0x00C828, 0xC8C8C8, 0x7800C8))

# One pattern a line: its name, then its steps as <duration ms><colour letter><motor 0/1>.
_MAX_STEPS = const(21)  # 3 ints per step, 7 steps in the longest pattern (call_manager)
_PATTERNS = const("""
slow_down 700a1 700-0 700a0 700-0
empathize 150b1 150-0 150b1 150-0
call_manager 150r1 150r0 150r1 150r0 150r1 1000r0 100-0
settled 300g0 10-0
ack 120w0 10-0
mute 600v0 10-0
unmute 150v0 150-0 150v0 10-0
""")


class RgbLed:
    """One RGB LED: a WS2812 (`neopixel.NeoPixel` with one pixel) or PWM channels, each value
    times `scale` as the duty (0-255 x 257 = full duty). The motor is one of these: see Motor."""

    def __init__(self, pixel=None, pwms=None, scale=257):
        self.pixel = pixel
        self.pwms = pwms
        self.scale = scale

    def set(self, *rgb):
        if self.pixel is not None:
            self.pixel[0] = rgb
            self.pixel.write()
        else:
            for pwm, v in zip(self.pwms, rgb):
                pwm.duty_u16(int(v * self.scale))


def Motor(pwm):  # a function, not a class: one class fewer in RAM
    """Coin vibration motor behind a transistor: set(strength 0-1) as the PWM duty."""
    return RgbLed(None, (pwm,), 65535)


class Outputs:
    def __init__(self, led, motor, brightness, haptic):
        self.led = led
        self.motor = motor
        self.brightness = brightness
        self.haptic = haptic
        self.playing = None  # name of the pattern being shown
        self.steps = array("i", (0,) * _MAX_STEPS)  # ms, 0xRRGGBB, motor, ... of that pattern
        self.n = 0  # how many of `steps` are in use (0: nothing playing)
        self.level = 1
        self.start = 0  # ms when it began
        self.value = -1  # colour << 1 | motor now on the hardware (-1: not written yet)
        led.set(0, 0, 0)
        motor.set(0)

    def show(self, name, now_ms, level=1):
        """Start a pattern. call_manager repeats until acknowledge() or it gives up."""
        if self.playing == "call_manager" and name not in ("call_manager", "ack", "mute"):
            return  # the most urgent cue stays on until the wearer acknowledges it
        i = _PATTERNS.index("\n" + name + " ")  # ValueError for a name not in the table
        steps = self.steps
        n = 0
        for s in _PATTERNS[i + len(name) + 2 : _PATTERNS.index("\n", i + 1)].split():
            steps[n] = int(s[:-2])
            # Slices, not s[-2]: indexing a str interns a one-character qstr for good.
            steps[n + 1] = _COLOURS[_LETTERS.index(s[-2:-1])]
            steps[n + 2] = int(s[-1:])
            n += 3
        self.playing = name
        self.n = n
        self.level = level
        self.start = now_ms
        self.tick(now_ms)

    def acknowledge(self, now_ms):
        """Short press: stop a repeating cue, confirm with a short white blink."""
        was = self.playing
        self.playing = None
        self.show("ack", now_ms)
        return was

    def tick(self, now_ms):
        if not self.n:
            return
        steps = self.steps
        t = now_ms - self.start
        nag = self.playing == "call_manager"
        colour = motor = 0  # off between the manager call's repeats and at the end
        keep = False
        if not nag or t < _MANAGER_GIVE_UP_MS:
            if nag:
                t %= _MANAGER_REPEAT_MS
                keep = True
            for i in range(0, self.n, 3):
                if t < steps[i]:
                    colour = steps[i + 1]
                    motor = steps[i + 2]
                    keep = True
                    break
                t -= steps[i]
        if not keep:
            self.n = 0
            self.playing = None
        if self.value == colour << 1 | motor:
            return
        self.value = colour << 1 | motor
        # Level 1-3 raises brightness a little: a stronger cue is slightly more visible.
        k = self.brightness * (0.6 + 0.2 * self.level)
        if k > 1:
            k = 1
        self.led.set(int((colour >> 16) * k), int((colour >> 8 & 255) * k), int((colour & 255) * k))
        self.motor.set(self.haptic if motor else 0)
