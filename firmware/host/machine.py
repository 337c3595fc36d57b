# Fake `machine` for running the headset firmware on the MicroPython unix port (host runner,
# tests). Only the hardware is fake: I2S reads a WAV file, Pin/PWM/ADC/NeoPixel/WDT record what
# they were told. Recording is streamed to `trace` (the runner prints it as JSON lines) and kept
# as last values and counters only, so a ten-minute run holds no growing history in RAM.
#
# Put firmware/host first on sys.path: a `machine.py` on the path takes precedence over the
# unix port's built-in `machine`.

import io
import time

trace = None  # trace(kind, name, value) or None
now_ms = None  # () -> ms of (audio) time, set by the runner
state = {}  # name -> last value written
counts = {}  # name -> number of writes
_i2s_source = [None, False, False]  # path, loop, real time
_pins_in = {}  # pin id -> value the "user" holds it at (button presses)


def _record(kind, name, value):
    state[name] = value
    counts[name] = counts.get(name, 0) + 1
    if trace is not None:
        trace(kind, name, value)


def set_i2s_source(path, loop=False, realtime=False):
    """realtime: deliver audio no faster than 16 kHz, for the asyncio main loop of the device
    (firmware.app.run); otherwise readinto returns at once (faster than real time)."""
    _i2s_source[0] = path
    _i2s_source[1] = loop
    _i2s_source[2] = realtime


def press(pin_id, down):
    """The test's finger on a button: hold the pin low (down) or release it."""
    _pins_in[pin_id] = 0 if down else 1


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = mode
        self.pull = pull
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return _pins_in.get(self.id, 1 if self.pull == Pin.PULL_UP else 0)
        _record("pin", "pin%d" % self.id, v)

    def __call__(self, v=None):
        return self.value(v)


class PWM:
    def __init__(self, pin, freq=1000, duty_u16=0):
        self.pin = pin
        self._freq = freq
        self._duty = 0
        self.duty_u16(duty_u16)

    def freq(self, f=None):
        if f is None:
            return self._freq
        self._freq = f

    def duty_u16(self, d=None):
        if d is None:
            return self._duty
        if d != self._duty or ("pwm%d" % self.pin.id) not in state:
            self._duty = d
            _record("pwm", "pwm%d" % self.pin.id, d)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    uv = 1950000  # what the pin "sees": half of a 3.9 V cell through the divider

    def __init__(self, pin, atten=None):
        self.pin = pin

    def atten(self, a):
        self._atten = a

    def read_uv(self):
        return ADC.uv

    def read_u16(self):
        return ADC.uv * 65535 // 3100000


class I2S(io.IOBase):
    RX = 0
    TX = 1
    MONO = 0
    STEREO = 1

    def __init__(self, id, sck=None, ws=None, sd=None, mode=0, bits=16, format=0, rate=16000,
                 ibuf=0):
        path, loop, self.realtime = _i2s_source
        self.rate = rate
        self.t0 = None
        if path is None:
            raise OSError("fake I2S: no WAV source; call machine.set_i2s_source(path)")
        if bits != 16 or format != I2S.MONO:
            raise ValueError("fake I2S supports 16-bit mono only")
        self.loop = loop
        self.f = open(path, "rb")
        self.start, self.end = _wav_data(self.f, rate)
        self.f.seek(self.start)
        self.samples_read = 0

    def readinto(self, buf):
        """Returns immediately (faster than real time). At the end of the WAV: loops, or 0."""
        mv = memoryview(buf)
        # Mic reads into array('h') (or a memoryview of it): its items are 2 bytes.
        per = len(bytes(mv[:1])) if len(mv) else 1
        want = len(buf) * per
        got = 0
        while got < want:
            room = self.end - self.f.tell()
            if room <= 0:
                if not self.loop:
                    break
                self.f.seek(self.start)
                continue
            n = self.f.readinto(_bytes_view(mv, per, got, min(want - got, room)))
            if not n:
                break
            got += n
        self.samples_read += got // 2
        return got

    def ioctl(self, req, arg):
        # select.poll / asyncio.StreamReader ask whether a read would return data now.
        if req == 10:  # MP_STREAM_GET_FILENO: no file descriptor, so poll asks MP_STREAM_POLL
            return -1
        if req != 3:  # MP_STREAM_POLL
            return 0
        if not self.realtime:
            return arg & 1
        now = time.ticks_ms()
        if self.t0 is None:
            self.t0 = now
        return arg & 1 if self.samples_read * 1000 // self.rate <= time.ticks_diff(now, self.t0) else 0

    def deinit(self):
        self.f.close()


def _bytes_view(mv, per, start, n):
    # A memoryview over array('h') indexes in samples; readinto fills bytes.
    return mv[start // per:(start + n) // per]


def _wav_data(f, rate):
    head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise ValueError("fake I2S: not a WAV file")
    while True:
        ck = f.read(8)
        if len(ck) < 8:
            raise ValueError("fake I2S: WAV has no data chunk")
        size = int.from_bytes(ck[4:8], "little")
        if ck[:4] == b"fmt ":
            fmt = f.read(size)
            ch = int.from_bytes(fmt[2:4], "little")
            sr = int.from_bytes(fmt[4:8], "little")
            bits = int.from_bytes(fmt[14:16], "little")
            if (ch, sr, bits) != (1, rate, 16):
                raise ValueError(
                    "fake I2S: WAV is %d ch, %d Hz, %d bit; the microphone gives 1 ch, %d Hz, "
                    "16 bit (convert with: sox in.wav -c 1 -r %d -b 16 out.wav)"
                    % (ch, sr, bits, rate, rate))
        elif ck[:4] == b"data":
            start = f.tell()
            return start, start + size
        else:
            f.seek(f.tell() + size + (size & 1))


class WDT:
    feeds = 0

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        _record("wdt", "wdt", timeout)

    def feed(self):
        WDT.feeds += 1


class ResetRequested(Exception):
    pass


def reset():
    raise ResetRequested()


def unique_id():
    return b"\x24\x0a\xc4\x00\x00\x01"


def freq(f=None):
    return 240000000
