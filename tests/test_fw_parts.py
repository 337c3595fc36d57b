"""Headset firmware parts: flash queue and config on the MicroPython unix port (as on the
device) and on CPython; button and cue patterns with recording fakes; the bundle manifest."""

from __future__ import annotations

import hashlib
import json

import pytest

from firmware.core import cue_table
from firmware.core.store import Queue
from firmware.headset import config
from firmware.headset.main import Hardware
from firmware.headset.outputs import Outputs
from firmware.tools import bundle

QUEUE_SCRIPT = """
import os
from firmware.core.store import Queue
root = %r
q = Queue(root + "/q", max_events=5)
for i in range(3):
    q.put(b'{"n": %%d}' %% i)
q2 = Queue(root + "/q", max_events=5)          # reboot: a fresh object on the same flash
print(len(q2), q2.peek())
q2.pop()
q3 = Queue(root + "/q", max_events=5)
print(len(q3), q3.peek())
for i in range(3, 9):
    q3.put(b'{"n": %%d}' %% i)                  # over the bound: oldest dropped
print(len(q3), q3.dropped, q3.peek())
got = []
while q3.peek() is not None:
    got.append(q3.peek()); q3.pop()
print(got)
"""


def test_queue_survives_reboot_bounded_in_order_on_micropython(mpy, tmp_path):
    out = mpy(QUEUE_SCRIPT % str(tmp_path), heapsize="64K").stdout.split("\n")
    assert out[0] == "3 b'{\"n\": 0}'"
    assert out[1] == "2 b'{\"n\": 1}'"
    assert out[2] == "5 3 b'{\"n\": 4}'"
    assert out[3] == str([f'{{"n": {i}}}'.encode() for i in range(4, 9)])


def test_queue_segments_and_torn_line(tmp_path):
    q = Queue(str(tmp_path / "q"), max_events=500)
    for i in range(70):  # three segments
        q.put(json.dumps({"n": i}).encode())
    for _ in range(40):
        q.pop()
    segments = sorted(p.name for p in (tmp_path / "q").iterdir() if p.name.isdigit())
    assert len(segments) == 2  # the fully delivered first segment is gone
    # Power cut in the middle of an append: a line without its newline at the end.
    with open(tmp_path / "q" / segments[-1], "ab") as f:
        f.write(b'{"n": 99')
    q = Queue(str(tmp_path / "q"))
    q.put(b'{"n": 70}')
    got = []
    while (item := q.peek()) is not None:
        got.append(json.loads(item)["n"])
        q.pop()
    assert got == list(range(40, 71))
    assert q.damaged == 1 and len(q) == 0


def test_config_half_written_falls_back_to_last_good(tmp_path):
    root = str(tmp_path) + "/"
    cfg, err = config.load(root)
    assert err is None and cfg == config.DEFAULTS  # nothing on flash: defaults, no complaint
    config.save(config.merged({"rev": 2, "brightness": 0.8}), root)
    (tmp_path / "config.json").write_text('{"rev": 3, "bright')
    cfg, err = config.load(root)
    assert cfg["rev"] == 2 and cfg["brightness"] == 0.8
    assert "not valid JSON" in err and "last good config (rev 2)" in err
    (tmp_path / "config.good").write_text("{}}")
    cfg, err = config.load(root)
    assert cfg == config.DEFAULTS and "using defaults" in err
    # A value out of range is refused with what to do.
    errs = config.problems({"brightness": 2, "tele_s": "often", "colour": 1})
    assert any("between 0 and 1" in e for e in errs)
    assert any("tele_s must be an integer" in e for e in errs)
    assert any("colour is not a config key" in e for e in errs)


class Rec:
    """A recording LED/motor/pin fake."""

    def __init__(self, value=1):
        self.log: list = []
        self.v = value

    def set(self, *v):
        self.log.append(v)

    def value(self):
        return self.v


def test_button_short_press_acks_long_press_mutes():
    pin = Rec()
    b = Hardware(None, pin, None)  # hw.button is the Hardware object itself
    b.long_press_ms = 1500
    seen = []
    for t in range(0, 3000, 20):
        pin.v = 0 if 100 <= t < 300 or 1000 <= t < 2800 else 1
        action = b.poll(t)
        if action:
            seen.append((action, t))
    assert [a for a, _ in seen] == ["ack", "mute"]
    assert 2500 <= seen[1][1] < 2800  # fires while still held, 1.5 s after the press began


def test_cue_patterns_are_distinct_and_manager_repeats_until_ack():
    led, motor = Rec(), Rec()
    out = Outputs(led, motor, brightness=0.5, haptic=0.6)
    out.show("empathize", 0, level=2)
    for t in range(0, 1000, 10):
        out.tick(t)
    buzzes = sum(1 for (v,) in motor.log if v > 0)
    assert buzzes == 2  # two short
    assert out.playing is None and led.log[-1] == (0, 0, 0)
    motor.log.clear()
    out.show("call_manager", 2000, level=3)
    for t in range(2000, 14000, 10):
        out.tick(t)
    # three short every repeat_ms (4 s): three times in 12 s
    assert cue_table.find("call_manager")[11] == 4000  # repeat_ms
    assert sum(1 for (v,) in motor.log if v > 0) == 9
    out.show("settled", 14000)  # a lesser cue does not hide the manager call
    assert out.playing == "call_manager"
    out.acknowledge(14010)
    for t in range(14010, 20000, 10):
        out.tick(t)
    assert out.playing is None and led.log[-1] == (0, 0, 0)


def test_bundle_manifest_lists_every_file_with_its_hash(tmp_path):
    manifest = bundle.build(tmp_path / "fw")
    files = manifest["files"]
    assert "main.py" in files and "firmware/headset/app.mpy" in files and "firmware/headset/net.mpy" in files
    assert not any(p.startswith("umqtt/") for p in files)  # blocking, and imports ussl (gone in 1.23)
    assert not any("host/" in p or p.startswith("firmware/tools") for p in files)
    for path, meta in files.items():
        data = (tmp_path / "fw" / path).read_bytes()
        assert meta == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    on_disk = json.loads((tmp_path / "fw" / "manifest.json").read_text())
    assert on_disk["version"] == manifest["version"] and on_disk["march"] == "xtensawin"
    # .mpy header: 'M', version 6, and the Xtensa-windowed architecture for @native/@viper.
    head = (tmp_path / "fw" / "firmware" / "core" / "features.mpy").read_bytes()[:4]
    assert head[0:2] == b"M\x06" and head[2] >> 2 == 10  # MP_NATIVE_ARCH_XTENSAWIN


UNPROVISIONED = """
import machine
from firmware.headset import main
machine.wav = [%r, False, False]
i2s, hw = main.hardware()
from firmware.headset.app import Device
try:
    Device(hw, %r)
except RuntimeError as e:
    print("ERR", e)
print("WDT", "wdt" in machine.state)
"""


def test_unprovisioned_device_says_what_to_do_and_starts_no_watchdog(mpy, tmp_path):
    wav = bundle.REPO / "calmcue" / "data" / "demo_conversation.wav"
    host = bundle.REPO / "firmware" / "host"
    out = mpy(UNPROVISIONED % (str(wav), str(tmp_path) + "/"), heapsize="512K", paths=[host])
    lines = out.stdout.splitlines()
    assert (
        lines[0].startswith("ERR device.json is missing") and "calmcue device provision" in lines[0]
    )
    assert lines[1] == "WDT False"  # the REPL stays usable for provisioning


class FakePWM:
    def __init__(self):
        self.duty = None

    def duty_u16(self, d):
        self.duty = d


class FakeADC:
    def __init__(self, uv):
        self.uv = uv

    def read_uv(self):
        return self.uv


def test_pwm_led_motor_and_battery():
    from firmware.headset.outputs import Motor, RgbLed

    def battery(uv):  # hw.battery is the Hardware object itself
        return Hardware(None, None, FakeADC(uv))

    pwms = [FakePWM(), FakePWM(), FakePWM()]
    RgbLed(pwms=pwms).set(255, 128, 0)
    assert [p.duty for p in pwms] == [65535, 128 * 257, 0]
    motor_pwm = FakePWM()
    Motor(motor_pwm).set(0.5)
    assert motor_pwm.duty == 32767
    assert battery(2_100_000).percent() == 100  # 4.2 V through the 1:2 divider
    assert battery(1_600_000).percent() == 0  # 3.2 V: empty
    assert 40 <= battery(1_890_000).percent() <= 60  # 3.78 V
    assert battery(1_950_000).volts() == 3.9


def test_every_pattern_in_the_cue_table_plays_to_its_end():
    """Outputs plays the rows of firmware/core/cue_table.py as they are (a playing cue holds no extra
    heap): every cue and signal lights or buzzes at once and ends dark and still."""
    from firmware.headset import outputs

    class Led:
        def __init__(self):
            self.writes = []

        def set(self, *v):
            self.writes.append(v)

    names = [row[0] for row in cue_table.rows() + cue_table.rows(signals=True)]
    for name in names:
        led, motor = Led(), Led()
        o = outputs.Outputs(led, motor, 1.0, 1.0)
        o.show(name, 0)
        assert o.playing == name
        assert led.writes[-1] != (0, 0, 0) or motor.writes[-1] != (0,)
        o.tick(130_000)  # past every pattern's end (call_manager gives up after 120 s)
        assert o.playing is None
        assert led.writes[-1] == (0, 0, 0) and motor.writes[-1] == (0,)
    with pytest.raises(ValueError, match="no pattern"):
        outputs.Outputs(Led(), Led(), 1.0, 1.0).show("dance", 0)


def test_a_tick_stamped_before_the_cue_started_changes_nothing():
    """The host runner ticks the outputs at the 20 ms steps inside a hop after the hop's cue was
    shown at its end, so a tick can come before the pattern's start. With `settled` (no motor
    timeline: on + off = 0) that divided by zero and stopped the 10-minute headset demo once a
    flare-up after `settled` was cued; such a tick now leaves the pattern as it is."""
    from firmware.headset import outputs

    class Led:
        def __init__(self):
            self.writes = []

        def set(self, *v):
            self.writes.append(v)

    for name in [row[0] for row in cue_table.rows() + cue_table.rows(signals=True)]:
        led, motor = Led(), Led()
        o = outputs.Outputs(led, motor, 1.0, 1.0)
        o.show(name, 5000)
        before = (list(led.writes), list(motor.writes))
        for t in range(4000, 5000, 20):
            o.tick(t)
        assert (led.writes, motor.writes) == before and o.playing == name
