# Fake `neopixel` for the host runner: records the colour written to each pixel.
import machine


class NeoPixel:
    def __init__(self, pin, n, bpp=3, timing=1):
        self.pin = pin
        self.n = n
        self._buf = [(0, 0, 0)] * n

    def __setitem__(self, i, rgb):
        self._buf[i] = rgb

    def __getitem__(self, i):
        return self._buf[i]

    def write(self):
        machine._record("led", "led%d" % self.pin.id, self._buf[0])
