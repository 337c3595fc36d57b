# INMP441 I2S microphone: 16 kHz, 16-bit mono, read into one preallocated buffer so the audio loop
# allocates nothing. Audio only ever lives in this RAM buffer: never written to flash or sent.
from array import array

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


RATE = const(16000)
# 0.1 s per read. The feature front end takes any chunk size (it completes a window every 0.25 s);
# a small buffer needs only a small contiguous block of the fragmented heap.
HOP = const(1600)


class Mic:
    def __init__(self, i2s, samples=HOP):
        self.i2s = i2s
        self.samples = array("h", bytearray(2 * samples))
        self.ok = True
        self.errors = 0

    def read(self):
        """Fill the buffer; returns the number of samples read (0 at the end of a WAV on the host
        runner, or when the microphone fails, which is counted and shown in telemetry)."""
        try:
            n = self.i2s.readinto(self.samples)
        except OSError:
            self.ok = False
            self.errors += 1
            return 0
        self.ok = True
        return n // 2
