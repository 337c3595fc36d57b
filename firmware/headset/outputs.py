# Cue patterns on the LED and the vibration motor, advanced by tick(now_ms) from the main loop or
# a timer: nothing here sleeps, so the audio loop is never held up. Hardware is written only when
# the pattern changes step. The patterns are the rows of firmware/core/cue_table.py (the Pi agent
# plays the same ones): show() copies the row's numbers into a list made once and tick() reads
# that, so playing allocates nothing and keeps nothing new on the heap; the motor is an RgbLed
# with one channel, so there are two classes.

from firmware.core import cue_table

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_MANAGER_GIVE_UP_MS = const(120000)  # stop nagging the wearer; the companion escalates anyway


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
        self.playing = None  # name of the pattern being shown (None: dark)
        # its firmware/core/cue_table.py row without the name and the label: level, colour, LED pct
        # on off times, motor pct on off times, repeat_ms
        self.pattern = [0] * 11
        self.level = 1
        self.start = 0  # ms when it began
        self.value = -1  # LED % << 8 | motor % now on the hardware (-1: not written yet)
        led.set(0, 0, 0)
        motor.set(0)

    def show(self, name, now_ms, level=1):
        """Start a cue's (or a signal's) pattern: ValueError for a name the table does not
        have. A repeating cue (call_manager) stays until acknowledge() or it gives up; a lesser
        cue does not replace it."""
        row = cue_table.find(name)  # parsed from the table's text: garbage once copied
        if row is None:
            raise ValueError("no pattern for %r" % (name,))
        pattern = self.pattern
        if self.playing is not None and pattern[10] and 0 < row[1] < pattern[0]:
            return
        for i in range(11):
            pattern[i] = row[i + 1]
        self.playing = name
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
        if self.playing is None:
            return
        t = now_ms - self.start
        if t < 0:
            return  # a tick stamped before the cue started (the host runs them after the hop)
        _, c, led_pct, led_on, led_off, led_n, pct, on, off, n, repeat = self.pattern
        led = motor = -1  # the levels (%) now; -1: past the end of that timeline
        if not repeat or t < _MANAGER_GIVE_UP_MS:
            if repeat:
                t %= repeat
            if t < led_n * (led_on + led_off):
                led = led_pct if t % (led_on + led_off) < led_on else 0
            if t < n * (on + off):
                motor = pct if t % (on + off) < on else 0
            if repeat and led < 0 and motor < 0:
                led = 0  # off between the repeats
        if led < 0 and motor < 0:
            self.playing = None
        if led < 0:
            led = 0
        if motor < 0:
            motor = 0
        old = self.value
        if old == led << 8 | motor:
            return
        self.value = led << 8 | motor
        if old < 0 or old >> 8 != led:
            # Level 1-3 raises brightness a little: a stronger cue is slightly more visible.
            k = self.brightness * (0.6 + 0.2 * self.level) * led / 100
            if k > 1:
                k = 1
            self.led.set(int((c >> 16) * k), int((c >> 8 & 255) * k), int((c & 255) * k))
        if old < 0 or old & 255 != motor:
            self.motor.set(self.haptic * motor / 100)
