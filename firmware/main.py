# Hardware main for the ESP32-S3 headset (hardware/esp32s3-headset.md has the pins and wiring).
# On the device this file is copied to /main.py by the bundle; the host runner calls hardware()
# with the fake `machine` and `network` from firmware/host/ and steps the same Device.
import machine
import network

from firmware.battery import Battery
from firmware.button import Button
from firmware.mic import HOP, RATE, Mic
from firmware.outputs import Motor, RgbLed

# GPIO numbers (ESP32-S3-DevKitC-1 / XIAO ESP32S3 wiring in hardware/esp32s3-headset.md).
PIN_I2S_SCK = 4
PIN_I2S_WS = 5
PIN_I2S_SD = 6
PIN_LED = 48  # WS2812 data (on-board RGB LED of the DevKitC-1)
PIN_MOTOR = 7  # gate of the motor transistor (PWM)
PIN_BUTTON = 0  # to GND, internal pull-up
PIN_BATTERY = 1  # ADC1_CH0, middle of the 100k/100k divider
WDT_MS = 30000
# I2S DMA buffer: 1 s of audio, so a slow network step (an MQTT publish is ~10 ms; a dead
# broker costs up to the 5 s socket timeout, rarely) does not drop samples.
I2S_IBUF = 32000


class Hardware:
    """What the firmware drives, handed to firmware.app.Device."""

    def __init__(self, mic, led, motor, button, battery, wlan, wdt=None, reset=None, ntp=None):
        self.mic = mic  # firmware.mic.Mic
        self.led = led  # firmware.outputs.RgbLed
        self.motor = motor  # firmware.outputs.Motor
        self.button = button  # firmware.button.Button
        self.battery = battery  # firmware.battery.Battery or None
        self.wlan = wlan  # network.WLAN(STA_IF)
        self.wdt = wdt  # machine.WDT
        self.reset = reset  # machine.reset
        self.ntp = ntp  # () -> Unix seconds; raises OSError when offline


def hardware():
    """Build the hardware objects (after the code is loaded: see main())."""
    i2s = machine.I2S(
        0, sck=machine.Pin(PIN_I2S_SCK), ws=machine.Pin(PIN_I2S_WS), sd=machine.Pin(PIN_I2S_SD),
        mode=machine.I2S.RX, bits=16, format=machine.I2S.MONO, rate=RATE, ibuf=I2S_IBUF,
    )
    import neopixel

    led = RgbLed(pixel=neopixel.NeoPixel(machine.Pin(PIN_LED), 1))
    motor = Motor(machine.PWM(machine.Pin(PIN_MOTOR), freq=1000, duty_u16=0))
    button = Button(machine.Pin(PIN_BUTTON, machine.Pin.IN, machine.Pin.PULL_UP))
    adc = machine.ADC(machine.Pin(PIN_BATTERY))
    adc.atten(machine.ADC.ATTN_11DB)
    wlan = network.WLAN(network.STA_IF)
    return i2s, Hardware(
        Mic(i2s, HOP), led, motor, button, Battery(adc), wlan, None, machine.reset, ntp_unix,
    )


def start_watchdog(hw):
    """Only once the device has booted properly: an unprovisioned device (no device.json) stops
    at the REPL with a message, and a running watchdog would reset it under the provisioning
    tool every WDT_MS."""
    hw.wdt = machine.WDT(timeout=WDT_MS)


def ntp_unix():
    """Unix time from NTP (raises OSError when offline). ESP32 ports count from 2000."""
    import time

    import ntptime

    t = ntptime.time()
    if time.gmtime(0)[0] == 2000:
        t += 946684800
    return t


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
    from firmware.modelfile import load_model

    model = load_model("/")
    gc.collect()
    from firmware.app import Device, run

    gc.collect()
    i2s, hw = hardware()
    gc.collect()
    dev = Device(hw, "/", model=model)  # raises with what to do when the device is not provisioned
    start_watchdog(hw)
    asyncio.run(run(dev, i2s))


if __name__ == "__main__":
    main()
