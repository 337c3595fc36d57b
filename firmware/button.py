# The wearer's one button, polled from the main loop: a short press acknowledges a cue, a long
# press mutes or unmutes. The pin is active low with the internal pull-up (button to GND).

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_DEBOUNCE_MS = const(30)


class Button:
    def __init__(self, pin, long_press_ms=1500):
        self.pin = pin
        self.long_press_ms = long_press_ms
        self._down_since = -1  # ms when a debounced press began, -1 when released
        self._raw_since = 0
        self._raw = 1
        self._long_fired = False

    def poll(self, now_ms):
        """Returns "ack", "mute" or None. "mute" fires while still held, so the wearer feels it."""
        raw = self.pin.value()
        if raw != self._raw:
            self._raw = raw
            self._raw_since = now_ms
            return None
        if now_ms - self._raw_since < _DEBOUNCE_MS:
            return None
        if raw == 0:
            if self._down_since < 0:
                self._down_since = self._raw_since
                self._long_fired = False
            elif not self._long_fired and now_ms - self._down_since >= self.long_press_ms:
                self._long_fired = True
                return "mute"
            return None
        if self._down_since >= 0:
            self._down_since = -1
            if not self._long_fired:
                return "ack"
        return None
