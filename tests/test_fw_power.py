"""Headset power (issue 16 item 12): the CPU clock the timing model chose and Wi-Fi power save
are set by the firmware itself, checked with recording fakes that take only what the ESP32
port takes; the battery budget in hardware/esp32s3-headset.md is the datasheet estimate that
firmware/tools/power_budget.py computes and the smoke test compares a meter's reading with."""

from __future__ import annotations

import json
import re
import subprocess

from fw_harness import REPO, run_through

from calmcue.mpy import interpreter
from firmware.tools import power_budget, smoke_headset

FAKE_API = r"""
import sys
sys.path[:0] = [%(host)r]
import machine, network
def err(f):
    try:
        f()
    except Exception as e:
        return type(e).__name__ + ": " + str(e)
    return "accepted"
w = network.WLAN(network.STA_IF)
out = {
    "before_active": err(lambda: w.config(pm=w.PM_POWERSAVE)),
    "query_default": w.config("pm"),
}
w.active(True)
out["unknown_param"] = err(lambda: w.config(listen_interval=3))
out["both_forms"] = err(lambda: w.config("pm", pm=1))
out["bad_mode"] = err(lambda: w.config(pm=7))
out["set"] = err(lambda: w.config(pm=w.PM_POWERSAVE))
out["query"] = w.config("pm")
out["freq_odd"] = err(lambda: machine.freq(100000000))
out["freq_default"] = machine.freq()
out["freq_set"] = err(lambda: machine.freq(240000000))
out["freq"] = machine.freq()
print(__import__("json").dumps(out))
"""


def test_the_fakes_take_only_what_the_esp32_port_takes(host_build):
    proc = subprocess.run([*interpreter(), "-c", FAKE_API % {"host": str(host_build / "host")}],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before_active"] == "OSError: Wifi Not Started"
    assert out["query_default"] == 1  # ESP-IDF's default: WIFI_PS_MIN_MODEM
    assert out["unknown_param"] == "ValueError: unknown config param"
    assert out["both_forms"] == "TypeError: either pos or kw args are allowed"
    assert out["bad_mode"].startswith("RuntimeError: Wifi Unknown Error")
    assert out["set"] == "accepted" and out["query"] == 2
    assert out["freq_odd"].startswith("ValueError: frequency must be")
    assert out["freq_default"] == 160000000 and out["freq_set"] == "accepted"
    assert out["freq"] == 240000000


def test_firmware_sets_240_mhz_and_wifi_power_save_once_and_keeps_it(
    host_build, headset_wav, tmp_path, mosquitto
):
    """The whole firmware on the unix port (the harness heap) through a broker session: the clock set
    once at boot, Wi-Fi power save set once before the first join and still in force after it."""
    (tmp_path / "flash").mkdir()
    lines = run_through(host_build, tmp_path / "flash", headset_wav, mosquitto.port,
                        "--seconds", "3")  # fmt: skip
    done = next(x["done"] for x in lines if "done" in x)
    assert done["mqtt"] and done["connects"] == 1, done  # the station joined, MQTT ran
    assert done["outputs"]["freq"] == [240000000, 1]
    assert done["outputs"]["pm"] == [2, 1]  # PM_POWERSAVE, set once


def test_budget_in_the_hardware_doc_is_the_computed_estimate():
    doc = (REPO / "hardware" / "esp32s3-headset.md").read_text()
    b240, b160 = power_budget.budget(240), power_budget.budget(160)
    lo, hi = b240["total"]
    assert f"**{lo}-{hi} mA**" in doc, "hardware doc total differs from power_budget.budget()"
    assert f"{b160['total'][0]}-{b160['total'][1]} mA" in doc
    for part in ("cpu", "wifi_beacons", "microphone"):
        plo, phi = b240[part]
        assert (f"{plo}-{phi}" if plo != phi else f"{plo}") in doc, part
    h_lo, h_hi = power_budget.hours(1000, b240["total"])
    assert f"{h_lo}-{h_hi} h" in doc
    # the unmeasured figure the budget replaced is no longer given as the headset's current
    assert "~45 mA average" not in doc and "45 mA average" not in doc
    # The estimate is labelled as one, with the smoke test to confirm it.
    section = doc.split("## Power and timing budget")[1]
    assert re.search(r"estimate", section) and "--battery-ma" in section


def test_smoke_test_sets_a_meter_reading_against_the_estimate():
    lo, hi = power_budget.budget(240)["total"]
    base = {"freq_mhz": 240}
    assert "not measured" in smoke_headset.power_line(base)
    assert "within" in smoke_headset.power_line({**base, "battery_ma": (lo + hi) / 2})
    assert "ABOVE" in smoke_headset.power_line({**base, "battery_ma": hi + 10})
    assert "below" in smoke_headset.power_line({**base, "battery_ma": lo - 10})
