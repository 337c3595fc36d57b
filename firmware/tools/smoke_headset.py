"""Hardware smoke test for a provisioned headset, in one command:

    python -m firmware.tools.smoke_headset --port /dev/ttyACM0 [--seconds 30]

Stops the firmware (raw REPL over USB), then on the board itself: sets up the hardware as the
firmware does (`firmware.headset.main.hardware()`: CPU clock, I2S, Wi-Fi power save), records
`--seconds` of live microphone audio through the real pipeline (features, model, attribution,
policy) with the production I2S settings, joins Wi-Fi again from scratch, and opens one TLS session to the broker in device.json (when it is mqtts). Prints one
JSON line and a summary:

    rtf            CPU time / audio time of the pipeline (docs/firmware.md "Timing" predicts
                   0.17-0.35 at 240 MHz: this is the figure that confirms or refutes it)
    hop_max_ms     the slowest 0.05 s hop
    audio_lost_ms  audio the I2S DMA ring overwrote while the test ran (should be 0)
    heap_free      MicroPython heap free after gc.collect(), with the pipeline loaded
    wifi_connect_ms  from connect() to an IP address
    tls_handshake_ms TCP connect + TLS handshake with the broker's certificate checked
    mic_ok / mic_peak  whether the I2S read worked, and the loudest sample (0: no microphone)
    wifi_pm        the Wi-Fi power-save mode the board reports (2 = PM_POWERSAVE)
    battery_ma     with --battery-ma: what a meter in series with the battery showed while the
                   test ran, set against the datasheet estimate (firmware/tools/power_budget.py)

The board is reset at the end and boots the firmware again. The watchdog the firmware started
keeps being fed meanwhile.
"""

from __future__ import annotations

import argparse
import json
import sys

# Runs on the board (or on the unix port with firmware/host's fakes: tests/test_fw_smoke.py).
# %(root)r is the flash root, %(seconds)d the audio to record.
DEVICE_CODE = r"""
import gc, json, os, time
import machine
try:
    wdt = machine.WDT(timeout=30000)  # the firmware's watchdog may be running: keep feeding it
except Exception:
    wdt = None
def feed():
    if wdt is not None:
        wdt.feed()
from firmware.headset import main as fm
r = {}
from firmware.headset.modelfile import load_model
from firmware.core.pipeline import Pipeline
model = load_model(%(root)r)[0]
i2s, hw = fm.hardware()  # the firmware's own setup: CPU clock, I2S ring, Wi-Fi power save
r["freq_mhz"] = machine.freq() // 1000000
p = Pipeline({}, os.urandom, model)
gc.collect()
r["heap_free"] = gc.mem_free()
n = len(hw.samples)
busy = worst = got = peak = 0
hw.read()  # the ring has filled since I2S() started: drain it, then start the clock
t0 = time.ticks_ms()
late = 0
while got < %(seconds)d * 16000:
    k = hw.read()
    if not k:
        break
    got += k
    lag = time.ticks_diff(time.ticks_ms(), t0) - got // 16
    late = max(late, lag)
    s = time.ticks_us()
    p.process(hw.samples, k, got / 16000)
    d = time.ticks_diff(time.ticks_us(), s)
    busy += d
    worst = max(worst, d)
    for v in hw.samples:
        if v > peak or -v > peak:
            peak = abs(v)
    feed()
elapsed = time.ticks_diff(time.ticks_ms(), t0)
r["audio_s"] = got / 16000
r["rtf"] = round(busy / 1000 / (got / 16), 4) if got else None
r["hop_max_ms"] = round(worst / 1000, 2)
# Blocking reads keep pace with the microphone: audio time behind wall time at the end was lost.
r["audio_lost_ms"] = max(0, elapsed - got // 16 - 60)
r["mic_ok"] = hw.ok and got > 0
r["mic_peak"] = peak
ident = json.load(open(%(root)r + "device.json"))
w = hw.wlan
w.active(True)
if hasattr(w, "disconnect"):
    w.disconnect()
    time.sleep_ms(200)
wifi = ident.get("wifi", {})
t = time.ticks_ms()
w.connect(wifi.get("ssid", ""), wifi.get("password", ""))
while not w.isconnected() and time.ticks_diff(time.ticks_ms(), t) < 20000:
    time.sleep_ms(10)
    feed()
r["wifi_connect_ms"] = time.ticks_diff(time.ticks_ms(), t) if w.isconnected() else None
try:
    r["wifi_pm"] = w.config("pm")  # 2 = PM_POWERSAVE, as firmware/headset/main.py hardware() sets it
except Exception:
    r["wifi_pm"] = None
m = ident.get("mqtt", {})
r["tls_handshake_ms"] = None
if m.get("ssl") and w.isconnected():
    import socket
    from firmware.headset import tls
    s = socket.socket()
    t = time.ticks_ms()
    try:
        s.connect(socket.getaddrinfo(m["host"], m.get("port", 8883))[0][-1])
        s = tls.wrap(s, m, %(root)r)
        s.setblocking(False)
        while s.write(b"\xc0\x00") is None:  # a PINGREQ: written once the handshake is done
            time.sleep_ms(1)
            feed()
            if time.ticks_diff(time.ticks_ms(), t) > 20000:
                raise OSError("TLS handshake did not finish in 20 s")
        r["tls_handshake_ms"] = time.ticks_diff(time.ticks_ms(), t)
    except Exception as e:
        r["tls_error"] = repr(e)
    s.close()
print("SMOKE " + json.dumps(r))
"""


def device_code(seconds: int = 30, root: str = "/") -> str:
    return DEVICE_CODE % {"seconds": seconds, "root": root}


def parse(output: str) -> dict[str, object]:
    for line in output.splitlines():
        if line.startswith("SMOKE "):
            return dict(json.loads(line[6:]))
    raise RuntimeError("the board printed no result:\n" + output[-2000:])


def power_line(r: dict[str, object]) -> str:
    """The measured battery current against the estimate, or how to measure it."""
    from firmware.tools.power_budget import budget

    lo, hi = budget(int(str(r.get("freq_mhz") or 240)))["total"]
    est = f"estimate {lo}-{hi} mA (datasheet figures, hardware/esp32s3-headset.md)"
    ma = r.get("battery_ma")
    if not isinstance(ma, (int, float)):
        return (f"battery current not measured: put a meter in series with the battery, run "
                f"again with --battery-ma MA ({est})")
    verdict = "within" if lo <= ma <= hi else "ABOVE" if ma > hi else "below"
    return f"battery current {ma} mA measured: {verdict} the {est}"


def summary(r: dict[str, object]) -> str:
    def f(key: str, unit: str = "") -> str:
        v = r.get(key)
        return "n/a" if v is None else f"{v}{unit}"

    return "\n".join([
        f"CPU {f('freq_mhz', ' MHz')}; heap free {f('heap_free', ' B')} with the pipeline loaded",
        f"real-time factor {f('rtf')} over {f('audio_s', ' s')} of live audio (model: 0.17-0.35 "
        f"at 240 MHz); slowest hop {f('hop_max_ms', ' ms')}; audio lost {f('audio_lost_ms', ' ms')}",
        f"microphone ok: {f('mic_ok')} (peak sample {f('mic_peak')})",
        f"Wi-Fi join {f('wifi_connect_ms', ' ms')}; TLS handshake {f('tls_handshake_ms', ' ms')}"
        + (f" ({r['tls_error']})" if r.get("tls_error") else ""),
        f"Wi-Fi power save {f('wifi_pm')} (2 = PM_POWERSAVE)",
        power_line(r),
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", required=True, help="serial port of the headset, e.g. /dev/ttyACM0")
    ap.add_argument("--seconds", type=int, default=30, help="live audio to process")
    ap.add_argument("--battery-ma", type=float, metavar="MA",
                    help="average battery current a meter in series with the battery showed "
                    "during the run (a USB power meter on the charger input does not count)")
    args = ap.parse_args(argv)
    from firmware.tools.devicelink import DeviceError, DeviceLink

    try:
        with DeviceLink(args.port) as link:
            # No output until the end: wait for it longer than mpremote's default 10 s.
            out, err = link.t.exec_raw(device_code(args.seconds), timeout=args.seconds + 60)
            r = parse(out.decode() + err.decode())
            link.reset()
    except (DeviceError, RuntimeError) as e:
        print(f"smoke test failed: {e}", file=sys.stderr)
        return 1
    if args.battery_ma is not None:
        r["battery_ma"] = args.battery_ma
    print(json.dumps(r))
    print(summary(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
