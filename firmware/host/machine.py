# Fake hardware for the headset firmware on the MicroPython unix port (host runner, tests). On the
# ESP32 all of this is C in ROM; here every function, class and new name costs heap and qstrs,
# so it is one module with one class for the pins and as few methods as the firmware calls.
# Importing it also registers it as `network`, `neopixel` and `ntptime`, the other hardware
# modules firmware/headset/main.py imports (import looks in sys.modules first):
#
#   I2S       reads `wav` = [path, loop, paced]: a 16 kHz (the rate asked for) mono 16-bit WAV
#             with the canonical 44-byte header (what soundfile and sox write). At the end of the
#             data it loops, or returns 0. Read directly it returns at once. When `paced` (the
#             runner's --asyncio) it is the microphone in real time behind the ESP32 port's DMA
#             ring: samples arrive at the rate from the first poll on, a read returns only what
#             has arrived, it is readable once one DMA buffer (240 frames) is full, and the ring
#             holds ibuf // 1920 buffers (240 frames of 32-bit stereo, 8 B, whatever bits/format
#             say): what arrives beyond that overwrites the oldest, counted in .lost. Between
#             `fail` = [from_ms, to_ms] (since the first poll) a read raises OSError(EIO).
#   Pin       is also I2S, PWM, ADC (read_uv: half of a 3.9 V cell through the divider),
#             NeoPixel (records the colour set; write() is then a no-op), WDT (feed counts
#             into .count) and WLAN (joins only while `radio` is up; the runner drops the join
#             when it takes the radio down; config() takes pm= as the port does, once active):
#             one class, only the methods the firmware calls.
#   freq()    machine.freq: the ESP32-S3 port's five clocks or ValueError, recorded as "freq";
#             its checks and config()'s are in portapi.py, loaded per call (not resident).
#   time()    ntptime.time(): the host clock, only while the radio is up.
#
# PWM duty and the LED colour are recorded in `state` (name -> [last value, writes]), so a
# ten-minute run keeps no growing history; with `trace` true each write is also printed as a JSON
# line (the runner's {"out": ...} lines, at the audio time of the I2S). A started WDT too.
#
# Put firmware/host first on sys.path: a machine.py on the path shadows the unix port's built-in.
import sys
from time import ticks_diff, ticks_ms

state = {}
wav = None
trace = False
radio = True
mic = None  # the I2S: its sample count is the firmware's (audio) time
fail = None
STA_IF = "wlan"  # WLAN(STA_IF) is the one Pin that starts low: not joined

sys.modules["network"] = sys.modules["neopixel"] = sys.modules["ntptime"] = sys.modules[__name__]


reset = sys.exit  # never returns: the runner's process ends, as a reset ends the device's run


def _port(name, *args):
    # The port's checks (firmware/host/portapi.py), loaded for one call and dropped.
    try:
        return getattr(__import__("portapi"), name)(*args)
    finally:
        del sys.modules["portapi"]


def freq(hz=None):
    return _port("freq", hz)


def time():
    if not radio:
        raise OSError(110)  # ETIMEDOUT, as ntptime says when no answer comes
    return __import__("time").time()


class Pin(__import__("io").IOBase):  # IOBase: asyncio can poll it (ioctl) when it is the I2S
    IN = PULL_UP = 1
    ATTN_11DB = 3
    RX = MONO = 0
    PM_POWERSAVE = 2  # WLAN: WIFI_PS_MAX_MODEM (the port also has PM_NONE 0, PM_PERFORMANCE 1)
    # Class-level defaults: an instance gets its own only when used (fewer bytes per Pin).
    count = 0  # WDT: feeds; I2S: samples delivered
    pos = 1  # the level read: 1 released (pull-up), 0 held down (the runner's finger); WLAN: joined

    def __init__(self, id=0, *args, rate=0, timeout=0, ibuf=0, **kw):
        self.id = getattr(id, "id", id)  # ADC, NeoPixel, PWM: the Pin they drive
        if id == STA_IF:
            self.pos = False
        if timeout:  # WDT: started (the tests check an unprovisioned device starts none)
            state["wdt"] = [timeout, 1]
        if rate:  # I2S
            global mic
            mic = self
            self.rate = rate
            self.f = open(wav[0], "rb")
            h = self.f.read(44)
            # RIFF/WAVE, a 16-byte "fmt " chunk (PCM, 1 channel, rate, 16 bit), "data" at 36.
            if (h[:4] + h[8:16] + h[20:24] + h[34:40] != b"RIFFWAVEfmt \x01\x00\x01\x00\x10\x00data"
                    or int.from_bytes(h[24:28], "little") != rate):
                raise ValueError("%s: want a 16-bit mono %d Hz WAV, 44-byte header" % (wav[0], rate))
            self.end = 44 + int.from_bytes(h[40:], "little")
            self.start = None  # ticks_ms of the first poll (paced mode)
            self.ring = ibuf // 1920 * 240  # samples the DMA ring holds
            if self.ring < 480:
                raise ValueError("ibuf %d: the ESP32 port needs at least 2 DMA buffers" % ibuf)
            self.lost = 0

    def value(self):  # an input (the firmware drives no plain output pin); WLAN.isconnected
        return self.pos

    isconnected = value

    def duty_u16(self, v, *rgb):  # also NeoPixel's pixel[0] = rgb: the outputs recorder
        name = ("led%d" if rgb else "pwm%d") % self.id
        if rgb:
            v = rgb[0]
        s = state.get(name)
        state[name] = [v, s[1] + 1 if s else 1]
        if trace:
            t = mic.count * 1000 // mic.rate
            print(__import__("json").dumps({"out": name, "value": v, "t_ms": t}))

    __setitem__ = duty_u16

    def feed(self, *args):  # WDT.feed; as NeoPixel.write, WLAN.active and ADC.atten: ignored
        self.count += 1

    write = active = atten = feed

    def read_uv(self):
        return 1950000

    def connect(self, *args):
        self.pos = radio

    def config(self, *a, **kw):  # WLAN.config: pm only, checked as the port does
        return _port("config", self, a, kw)

    def status(self, *args):  # only "rssi" is asked for
        if not self.pos:
            raise OSError(107)  # ENOTCONN
        return -58

    def readinto(self, buf):
        """Fill buf (array('h') or a memoryview of one: 2-byte items) from the WAV's data, paced:
        with what has arrived; returns the bytes read."""
        mv = memoryview(buf)
        f = self.f
        i = 0
        want = len(mv)
        if wav[2]:
            t = self._arrived()
            if fail and fail[0] <= t < fail[1]:
                raise OSError(5)  # EIO
            want = min(want, self.waiting)
        while i < want:
            room = (self.end - f.tell()) // 2
            if room <= 0:
                if not wav[1]:
                    break
                f.seek(44)
                continue
            n = f.readinto(mv[i:min(want, i + room)]) // 2
            if not n:  # a file shorter than its header says
                break
            i += n
        self.count += i
        return 2 * i

    def _arrived(self):
        # Paced: samples recorded since the first poll, less those read; past the ring's size
        # the oldest are overwritten (skipped in the file, counted). Returns ms since the start.
        t = ticks_ms()
        if self.start is None:
            self.start = t
        t = ticks_diff(t, self.start)
        w = t * self.rate // 1000 - self.count - self.lost
        if w > self.ring:
            self.lost += w - self.ring
            size = self.end - 44
            self.f.seek(44 + (self.f.tell() - 44 + 2 * (w - self.ring)) % size)
            w = self.ring
        self.waiting = w
        return t

    def ioctl(self, req, arg):
        # select.poll / asyncio ask whether a read would return data now (MP_STREAM_POLL = 3,
        # readable = 1); MP_STREAM_GET_FILENO (10): none, so poll asks MP_STREAM_POLL.
        if req != 3:
            return -1 if req == 10 else 0
        if not wav[2]:
            return arg & 1
        t = self._arrived()
        return arg & 1 if self.waiting >= 240 or (fail and fail[0] <= t < fail[1]) else 0


I2S = PWM = ADC = NeoPixel = WLAN = WDT = Pin
