# Hardware main for the ESP32-S3 headset (hardware/esp32s3-headset.md has the pins and wiring).
# On the device /main.py (written by the bundle) calls main(); the host runner calls hardware()
# with the fakes of firmware/host/machine.py and steps the same Device.
#
# RAM (the unix port's heap is the yardstick, docs/firmware.md): each class costs ~0.4 KB and
# each method ~0.15 KB resident, so one class, Hardware, is both what firmware.headset.app.Device is
# handed and its inputs: the microphone, the button and the battery (hw.mic, hw.button and
# hw.battery are hw itself; they were three modules and four classes, 5.3 KB, now 2.3 KB).
# Constants are const() with a leading underscore, so they take no names in the module.
# `machine` is imported where used, so the inputs run on CPython too (tests with fakes).
from array import array

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_RATE = const(16000)
# 0.05 s per read. The feature front end takes any chunk size (it completes a window every
# 0.25 s); the I2S DMA ring (outside the heap, _I2S_IBUF) holds 0.51 s, so a small read buffer
# costs only more loop turns, and it is 1.6 KB of the 96 KB heap less than 0.1 s reads.
_HOP = const(800)

# GPIO numbers (ESP32-S3-DevKitC-1 / XIAO ESP32S3 wiring in hardware/esp32s3-headset.md).
_PIN_I2S_SCK = const(4)
_PIN_I2S_WS = const(5)
_PIN_I2S_SD = const(6)
_PIN_LED = const(48)  # WS2812 data (on-board RGB LED of the DevKitC-1)
_PIN_MOTOR = const(7)  # gate of the motor transistor (PWM)
_PIN_BUTTON = const(0)  # to GND, internal pull-up
_PIN_BATTERY = const(1)  # ADC1_CH0, middle of the 100k/100k divider
_WDT_MS = const(30000)
# 240 MHz, not the stock image's 160: the timing model (docs/firmware.md, "Timing") puts the
# pipeline at 0.26-0.52 of real time at 160 MHz, 0.17-0.35 at 240 (margin x2.9-x5.8), for
# about 5 mA more on average (the ESP32-S3 datasheet's modem-sleep figures, the budget in
# hardware/esp32s3-headset.md); firmware/tools/smoke_headset.py measures it on the board. Set
# by hardware(): machine.freq() fixes the clock (the port sets no frequency scaling or light
# sleep then; a running I2S channel would forbid light sleep anyway).
_CPU_HZ = const(240000000)
# I2S DMA ring. The ESP32 port receives into DMA buffers of 240 frames of 32-bit stereo (8 B a
# frame, whatever bits=16/MONO says) and makes ibuf // 1920 of them: 32000 B was 16 buffers =
# 3840 samples = 0.24 s, not the 1 s once assumed. 34 buffers = 8160 samples = 0.51 s, 65 KB of
# DMA-capable internal RAM outside the MicroPython heap. The network step never waits
# (firmware/headset/net.py); the ring covers CPU-bound steps: a TLS handshake (estimated 0.1-0.4 s on the
# S3, measured by firmware/tools/smoke_headset.py), a flash erase, a config change.
_I2S_IBUF = const(65280)
_DEBOUNCE_MS = const(30)
# (mV, percent) points of a typical 1-cell LiPo discharge curve at low load; text parsed when
# telemetry asks (once a minute), not a resident tuple of floats.
_CURVE = const("3300 0 3600 8 3700 25 3750 40 3800 55 3900 70 4000 82 4100 93 4200 100")


class Hardware:
    """What the firmware drives, handed to firmware.headset.app.Device: led and motor
    (firmware.headset.outputs.RgbLed), wlan (network.WLAN(STA_IF)), wdt (machine.WDT once started),
    reset (machine.reset), ntp() (Unix seconds, OSError when offline), and the inputs:
    mic (read(), samples, ok), button (poll(), long_press_ms) and battery (volts(), percent()),
    which are all this object."""

    # Set by hardware() (annotations cost nothing in MicroPython; they tell mypy these exist).
    led: object  # firmware.headset.outputs.RgbLed
    motor: object  # firmware.headset.outputs.Motor (an RgbLed with one channel)
    wlan: object  # network.WLAN(STA_IF)
    reset: object  # machine.reset

    def __init__(self, i2s, pin, adc):
        self.mic = self.button = self.battery = self
        self.wdt = None  # machine.WDT, set by start_watchdog()
        # Microphone: one preallocated buffer, so the audio loop allocates nothing. Audio only
        # ever lives in this RAM buffer: never written to flash or sent.
        self.i2s = i2s
        self.samples = array("h", bytearray(2 * _HOP))
        self.ok = True  # the last read worked (telemetry mic_ok)
        # Set by firmware.headset.app.run: audio the DMA ring lost, ms since boot (telemetry); how far
        # the audio task fell behind the microphone and the longest network step, at most
        # (the host runner reports them).
        self.lost_ms = self.late_ms = self.net_max_us = 0
        # Button: active low (internal pull-up, button to GND).
        self.pin = pin
        self.long_press_ms = 1500
        self.raw = 1  # last pin level seen
        self.changed = 0  # ms when it last changed
        # ms when a debounced press began; -1 released; -2 held after the long press fired
        self.start = -1
        # Battery: ADC pin between the 2 x 100 k divider (it sees half the cell voltage).
        self.adc = adc

    def read(self):
        """Fill the buffer; returns the number of samples read (0 at the end of a WAV on the host
        runner, or when the microphone fails, shown in telemetry as mic_ok)."""
        try:
            n = self.i2s.readinto(self.samples)
        except OSError:
            self.ok = False
            return 0
        self.ok = True
        return n // 2

    def poll(self, now_ms):
        """Button, polled from the main loop: returns "ack" (short press), "mute" (long press,
        fired while still held, so the wearer feels it) or None."""
        raw = self.pin.value()
        if raw != self.raw:
            self.raw = raw
            self.changed = now_ms
            return None
        if now_ms - self.changed < _DEBOUNCE_MS:
            return None
        start = self.start
        if raw == 0:
            if start == -1:
                self.start = self.changed
            elif start >= 0 and now_ms - start >= self.long_press_ms:
                self.start = -2
                return "mute"
            return None
        self.start = -1
        return "ack" if start >= 0 else None

    def volts(self):
        # read_uv() uses the chip's calibration, better than scaling read_u16() by hand; x 2 for
        # the divider.
        return self.adc.read_uv() * 2 / 1000000

    def percent(self, v=None):
        if v is None:
            v = self.volts()
        v *= 1000
        c = _CURVE.split()
        lo_v = lo_p = 0
        for i in range(0, len(c), 2):
            hi_v = int(c[i])
            hi_p = int(c[i + 1])
            if v <= hi_v:
                return int(lo_p + (hi_p - lo_p) * (v - lo_v) / (hi_v - lo_v)) if i else 0
            lo_v = hi_v
            lo_p = hi_p
        return 100

    def ntp(self):
        """Unix time from NTP (raises OSError when offline). ESP32 ports count from 2000."""
        import time

        import ntptime

        # ntptime waits for the answer: keep that under one audio chunk (a LAN or nearby pool
        # server answers in a few ms; no answer = OSError, asked again a minute later).
        ntptime.timeout = 0.04  # type: ignore[assignment]  # (stubs say int; settimeout takes float)
        t = ntptime.time()
        if time.gmtime(0)[0] == 2000:
            t += 946684800
        return t


def hardware():
    """Build the hardware objects (after the code is loaded: see main()); returns (i2s, hw)."""
    import machine
    import neopixel
    import network

    from firmware.headset.outputs import Motor, RgbLed

    machine.freq(_CPU_HZ)
    Pin = machine.Pin
    i2s = machine.I2S(
        0, sck=Pin(_PIN_I2S_SCK), ws=Pin(_PIN_I2S_WS), sd=Pin(_PIN_I2S_SD),
        mode=machine.I2S.RX, bits=16, format=machine.I2S.MONO, rate=_RATE, ibuf=_I2S_IBUF,
    )  # fmt: skip
    hw = Hardware(i2s, Pin(_PIN_BUTTON, Pin.IN, Pin.PULL_UP), machine.ADC(Pin(_PIN_BATTERY)))
    hw.adc.atten(machine.ADC.ATTN_11DB)
    hw.led = RgbLed(neopixel.NeoPixel(Pin(_PIN_LED), 1))
    hw.motor = Motor(machine.PWM(Pin(_PIN_MOTOR), freq=1000, duty_u16=0))
    # Wi-Fi power save, set once before the first join (ESP-IDF keeps it across reconnects):
    # PM_POWERSAVE wakes the radio every 3rd beacon (ESP-IDF's listen interval when none is
    # set) instead of every DTIM beacon; what reaches the headset (PUBACK, config, commands)
    # waits up to ~0.3 s for it, sending is not delayed. Same constants in 1.23-1.29.
    w = hw.wlan = network.WLAN(network.STA_IF)
    w.active(True)
    w.config(pm=w.PM_POWERSAVE)
    hw.reset = machine.reset
    return i2s, hw


def start_watchdog(hw):
    """Only once the device has booted properly: an unprovisioned device (no device.json) stops
    at the REPL with a message, and a running watchdog would reset it under the provisioning
    tool every _WDT_MS."""
    import machine

    hw.wdt = machine.WDT(timeout=_WDT_MS)


def load_code():
    """Import the firmware leaves first, collecting after each module, so no import's garbage is
    trapped between long-lived code (importing in dependency order from firmware.headset.app needed
    ~20 KB more heap). The host runner (firmware/host/hostboot.py) boots with this too."""
    import gc

    for name in (
        "firmware.core.cue_table", "firmware.core.events", "firmware.core.store",
        "firmware.headset.net", "firmware.headset.outputs",
        "firmware.core.features", "firmware.core.policy", "firmware.core.attribution",
        "firmware.core.pipeline", "firmware.headset.version",
        "firmware.headset.app",
    ):  # fmt: skip
        __import__(name)
        gc.collect()


def main():
    import asyncio
    import gc

    try:
        import esp

        esp.osdebug(None)  # no vendor log lines on the UART the REPL uses
    except ImportError:
        pass
    # The model's weights first (the biggest blocks, while the heap is in one piece), then all
    # code, then the buffers, collecting in between: long-lived objects end up packed and the
    # heap keeps contiguous room for the audio and feature buffers.
    from firmware.headset.modelfile import load_model

    model = load_model("/")
    del load_model
    gc.collect()
    load_code()
    from firmware.headset.app import Device, release, run

    release("firmware.headset.modelfile")  # needed once per boot
    gc.collect()
    i2s, hw = hardware()
    gc.collect()
    dev = Device(hw, "/", model=model)  # raises with what to do when the device is not provisioned
    start_watchdog(hw)
    asyncio.run(run(dev, i2s))


if __name__ == "__main__":
    main()
