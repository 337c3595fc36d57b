"""The headset's average battery current, estimated from datasheet figures (nothing here is
measured: there is no board on this machine). hardware/esp32s3-headset.md prints this table,
firmware/tools/smoke_headset.py compares a meter's reading with it, and
tests/test_fw_power.py keeps the three in step.

    python -m firmware.tools.power_budget

Sources (the figures are typical values at 3.3 V, 25 °C):
- CPU: ESP32-S3 Series Datasheet, "Current Consumption in Modem-sleep Mode" (also in the
  ESP32-S3-WROOM-1 module datasheet): WAITI (both cores idle) and one core running, the other
  idle; column 1 with every peripheral clock off, column 2 with every one on. The firmware runs
  on one core; its peripherals (I2S, LEDC, USB serial, timers) lie between the two columns,
  so the two are the range.
- Duty: the share of time that core runs the pipeline, the timing model's real-time factor
  (docs/firmware.md "Timing": 0.17-0.35 at 240 MHz, 0.26-0.52 at 160 MHz).
- Wi-Fi kept connected: ESP-IDF "Low Power Mode in Wi-Fi Scenarios", ESP32-S3 modem-sleep
  table (160 MHz, no DFS): average 40.1 / 38.7 / 38.2 mA at DTIM 1 / 3 / 10 over a floor of
  37.8-37.9 mA, so the beacon wake-ups cost 2.3 / 0.8 / 0.3 mA. WLAN.PM_POWERSAVE (set by
  firmware/headset/main.py) wakes every 3rd beacon: the DTIM 3 figure whatever the access point's DTIM.
- Traffic: telemetry once a minute, an MQTT ping a minute, a few events in a busy minute; per
  exchange ~2 ms of transmit (datasheet peak 286-355 mA) and the radio left receiving for
  ESP-IDF's 50 ms minimum active time (datasheet RX 95 mA) over the modem-sleep floor.
- Microphone: INMP441 datasheet, 1.4 mA typical.
- LED: a dark WS2812B draws a standby current its datasheet does not state (commonly measured
  0.5-1 mA); lit cues are a few seconds an hour at brightness 0.3.
- Motor: an 80 mA ERM for about a second per cue, a few cues an hour.
- Battery divider (2 x 100 kOhm, ~21 uA) and the LDO's quiescent current (AP2112 55 uA,
  ME6211 40 uA): under 0.1 mA.
Not included: a development board's extras (the DevKitC-1's power LED and USB bridge), PSRAM
(none on the N8 board), a flash-heavy moment (the datasheet adds 10 mA while accessing flash),
a TLS handshake or an update download. The smoke test's --battery-ma reading is the figure to
trust once a board exists.
"""

from __future__ import annotations

import json

# ESP32-S3 datasheet, modem-sleep: MHz -> (idle low, idle high, one core low, one core high) mA
CPU_MA = {160: (27.6, 42.3, 39.9, 54.6), 240: (32.9, 47.6, 51.2, 65.9)}
# timing model (docs/firmware.md): MHz -> real-time factor range = duty of the running core
DUTY = {160: (0.26, 0.52), 240: (0.17, 0.35)}
# ESP-IDF's ESP32-S3 modem-sleep measurements: average minus floor, by DTIM (mA)
BEACON_MA = {1: 40.1 - 37.8, 3: 38.7 - 37.9, 10: 38.2 - 37.9}
TRAFFIC_MA = (0.3, 1.0)  # ~6 exchanges a minute: 50 ms receiving + 2 ms transmitting each
MIC_MA = 1.4  # INMP441
LED_MA = (0.5, 1.0)  # dark WS2812B standby (lit cues add under 0.1 mA on average)
CUES_MA = (0.1, 0.2)  # LED lit and motor pulses, averaged over an hour
OTHER_MA = 0.1  # battery divider and LDO quiescent current


def budget(mhz: int = 240, listen_beacons: int = 3) -> dict[str, tuple[float, float]]:
    """(low, high) average current in mA of each part and the total."""
    idle_lo, idle_hi, run_lo, run_hi = CPU_MA[mhz]
    d_lo, d_hi = DUTY[mhz]
    parts = {
        "cpu": (idle_lo + d_lo * (run_lo - idle_lo), idle_hi + d_hi * (run_hi - idle_hi)),
        "wifi_beacons": (BEACON_MA[listen_beacons],) * 2,
        "wifi_traffic": TRAFFIC_MA,
        "microphone": (MIC_MA, MIC_MA),
        "led_standby": LED_MA,
        "cues": CUES_MA,
        "other": (OTHER_MA, OTHER_MA),
    }
    parts = {k: (round(lo, 1), round(hi, 1)) for k, (lo, hi) in parts.items()}
    total = (round(sum(lo for lo, _ in parts.values()), 1),
             round(sum(hi for _, hi in parts.values()), 1))  # fmt: skip
    return {**parts, "total": total}


def hours(capacity_mah: float, total: tuple[float, float]) -> tuple[float, float]:
    """Run time range on a cell of that capacity (90 % of it usable)."""
    return (round(0.9 * capacity_mah / total[1], 1), round(0.9 * capacity_mah / total[0], 1))


if __name__ == "__main__":
    for mhz in (240, 160):
        b = budget(mhz)
        print(json.dumps({"mhz": mhz, **b, "hours_500mAh": hours(500, b["total"]),
                          "hours_1000mAh": hours(1000, b["total"])}))
