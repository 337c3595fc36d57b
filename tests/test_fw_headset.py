"""The headset firmware end to end on the real MicroPython unix port (-X heapsize=HEAP, below) with fake
hardware and a real Mosquitto: audio -> cue -> LED/motor -> event; outages; reboots; config."""

from __future__ import annotations

import hashlib
import json
import struct
import time

import pytest
from fw_harness import Collector, Device, run_through

from firmware.core import events

SITE_DEV = "calmcue/v1/demo/headset-1/"
# The whole firmware (features, shipped model, policy, attribution, umqtt, app, and the host-only
# fakes the device does not carry), its code loaded from a folder into the heap, on this 64-bit
# unix port, where every object is twice its ESP32 size. 96K until the cue policy's state was
# named again (issue 14: its float cells cost ~8 KB here); the OTA download, which loads the
# most code at once, needs 112K, and so does the rest now; 120K since the policy's counter-mode
# all-clear (one cell, two names, one method): at 112K the OTA download from a folder died of
# MemoryError (640 B). The code in flash (ROMFS image) runs in 64K
# (tests/test_fw_romfs.py). make bench measures the smallest heap that still works
# (docs/firmware.md, "Memory").
HEAP = "120K"
# The device's own asyncio main loop (tasks, poller, stream). 104K until the policy's
# settle_quiet_s and calm-voice retry (five more cells and nine names, ~1 KB here): at 104K the
# fresh-clone run at /work/ci then died of MemoryError in _send_telemetry (a longer folder path
# lays the heap out differently), so the folder-loaded loop got 112K; 120K like HEAP since the
# counter-mode all-clear: a fresh-clone run at /work/ci then died at 112K in _send_telemetry
# (424 B) on the microphone-fault path (tests/test_fw_audio_ring.py).
ASYNC_HEAP = "120K"
# Config messages are checked as a board runs the firmware: its code imported in place from the
# ROMFS image (mapped outside the counted heap), at 96K. Loaded from a folder, the code is in the
# heap too, and since the wearer's pitch and the raised-voice rule a 20-setting policy message
# can no longer be checked at 112K ("not enough memory on the device to check this config").
IMAGE_HEAP = "96K"


@pytest.fixture
def collector(mosquitto):
    c = Collector(mosquitto.port)
    yield c
    c.close()


def _evt_key(e: dict) -> tuple[int, int]:
    return (e["boot"], e["seq"])


def test_demo_conversation_ten_minutes_heap_flat(
    host_build, headset_wav, tmp_path, mosquitto, collector
):
    """600 s of audio (the headset demo looped) through the whole firmware in a HEAP-sized heap:
    it never runs out, free heap after 10 min equals free heap after 1 min, every queued event
    reaches the broker, and the cues drove the LED and the motor."""
    flash = tmp_path / "flash"
    flash.mkdir()
    minutes = ",".join(str(60 * m) for m in range(1, 11))
    lines = run_through(
        host_build,
        flash,
        headset_wav,
        mosquitto.port,
        "--seconds",
        "600",
        "--heap-at",
        minutes,
        "--trace",
        heap=HEAP,
    )
    heap = {int(x["heap"]["t_s"]): x["heap"]["free"] for x in lines if "heap" in x}
    done = next(x["done"] for x in lines if "done" in x)
    print("free heap per minute:", heap, "lowest:", done["heap_min"])
    # The leak check, exactly: the same free heap at every minute mark (measured right
    # after the hop that ends there, stack scrubbed, after gc.collect()). Nothing the firmware
    # keeps depends on how long it has run or on what is playing at that instant.
    assert heap[600] == heap[60], "free heap changed between minute 1 and minute 10"
    assert len(set(heap.values())) == 1, heap
    assert done["heap_min"] > 4096
    assert done["t_ms"] >= 600_000

    queued = [x["evt"] for x in lines if "evt" in x]
    cues = [e for e in queued if e["type"] == "cue"]
    assert cues, "the demo conversation raised no cue"
    # The LED and the motor were driven for the cues (fake pins record what they were told).
    led = [x for x in lines if x.get("out") == "led48" and x["value"] != [0, 0, 0]]
    motor = [x for x in lines if x.get("out") == "pwm7" and x["value"] > 0]
    assert len(led) >= len(cues) and motor
    assert done["queue"] == 0 and done["sent"] == len(queued)
    # Privacy: after ten minutes of audio the device's flash holds its identity, config, boot
    # counter and queued events (closed schema) — no audio, no features.
    written = sorted(str(p.relative_to(flash)) for p in flash.rglob("*") if p.is_file())
    assert all(
        w in ("device.json", "boot", "config.good", "queue/head") or w.startswith("queue/0")
        for w in written
    ), written
    for seg in (flash / "queue").glob("0*"):
        for line in seg.read_bytes().splitlines():
            assert events.problems(json.loads(line)) == []

    collector.wait_for(
        lambda m: (
            m[0].endswith("/evt/" + queued[-1]["type"])
            and json.loads(m[1])["seq"] == queued[-1]["seq"]
        )
    )
    got = collector.events()
    assert [e["seq"] for e in got] == list(range(len(queued)))
    for e in got:
        assert events.problems(e) == []
        assert e["ts"] > 1.7e9  # NTP (the fake radio's host clock) was known: real timestamps
    assert [e["cue"] for e in got if e["type"] == "cue"] == [c["fields"]["cue"] for c in cues]


def test_outage_and_reboot_deliver_once_in_order(
    host_build, headset_wav, tmp_path, mosquitto, collector
):
    dev = Device(host_build, tmp_path, headset_wav, mosquitto.port, heap=HEAP)
    st = dev.cmd("audio 3")
    assert st["mqtt"]
    collector.wait_for(lambda m: m[0] == SITE_DEV + "status" and m[1] == b"online")

    mosquitto.stop()
    collector.wait_disconnected()
    for _ in range(3):
        dev.cmd("press 200")  # short presses: "ack" button events
    st = dev.cmd("audio 5")
    assert not st["mqtt"] and st["queue"] >= 3
    queued_before_reboot = st["queue"]
    dev.kill()  # power cut in the middle of the outage

    dev2 = Device(host_build, tmp_path, headset_wav, mosquitto.port, heap=HEAP)
    assert dev2.boot["boot"] == 2
    assert dev2.boot["queued"] == queued_before_reboot  # nothing queued was lost
    dev2.cmd("press 200")
    dev2.cmd("audio 2")
    mosquitto.start()
    assert collector.connected.wait(10)
    st = dev2.cmd("audio 40")  # backoff brings MQTT back; the queue drains
    assert st["mqtt"] and st["queue"] == 0
    dev2.close()

    produced = dev.events() + dev2.events()
    last = produced[-1]
    collector.wait_for(
        lambda m: (
            "/evt/" in m[0]
            and json.loads(m[1])["seq"] == last["seq"]
            and json.loads(m[1])["boot"] == 2
        )
    )
    got = collector.events()
    keys = [_evt_key(e) for e in got]
    assert len(keys) == len(set(keys)), "an event was delivered twice"
    assert keys == sorted(keys), "events arrived out of order"
    assert keys == [_evt_key(e) for e in produced]
    acks = [e for e in got if e["type"] == "button"]
    assert len(acks) == 4


def test_wifi_loss_queues_and_time_arrives_late(
    host_build, headset_wav, tmp_path, mosquitto, collector
):
    dev = Device(host_build, tmp_path, headset_wav, mosquitto.port, heap=HEAP)
    dev.cmd("radio down")  # no Wi-Fi from power-on: no NTP either
    dev.cmd("press 200")
    st = dev.cmd("audio 30")
    assert not st["mqtt"] and not st["ts_known"] and st["queue"] >= 2
    before = time.time()
    dev.cmd("radio up")
    st = dev.cmd("audio 70")  # Wi-Fi backoff has grown meanwhile; the next try gets through
    assert st["mqtt"] and st["ts_known"] and st["queue"] == 0
    up_now = st["t_ms"]
    dev.cmd("radio down")
    dev.cmd("audio 1")
    collector.wait_for(lambda m: m[0] == SITE_DEV + "status" and m[1] == b"offline")
    dev.close()

    got = collector.events()
    assert [e["seq"] for e in got] == list(range(len(dev.events())))
    # Every event got a timestamp once the clock was known, consistent with its up_ms: the
    # ones queued first are dated back by the uptime that passed since.
    offsets = {round(e["ts"] - e["up_ms"] / 1000, 1) for e in got}
    assert len(offsets) == 1
    boot_time = offsets.pop()
    assert before - up_now / 1000 - 5 < boot_time < time.time()


def test_corrupt_config_boots_with_last_good_and_says_so(
    host_build, headset_wav, tmp_path, mosquitto, collector
):
    good = {
        "rev": 3,
        "brightness": 0.5,
        "haptic": 0.4,
        "tele_s": 30,
        "long_press_ms": 1500,
        "eu_mode": False,
        "muted": False,
        "policy": {},
    }
    (tmp_path / "config.good").write_text(json.dumps(good))
    (tmp_path / "config.json").write_text(json.dumps(dict(good, rev=4))[:37])  # half-written

    dev = Device(host_build, tmp_path, headset_wav, mosquitto.port, heap=HEAP)
    assert "last good config (rev 3)" in dev.boot["config_error"]
    _, payload, _ = collector.wait_for(lambda m: m[0] == SITE_DEV + "tele", pump=dev.pump)
    tele = json.loads(payload)
    assert tele["config_rev"] == 3 and "not valid JSON" in tele["config_error"]
    for key in ("fw", "model", "up_s", "heap_free", "rssi", "batt_v", "queue", "boot"):
        assert key in tele

    # A valid retained config heals it: applied live, persisted, reported.
    collector.publish(
        SITE_DEV + "config", json.dumps(dict(good, rev=5, brightness=0.9)), retain=True
    )
    dev.cmd("audio 1")
    _, res, _ = collector.wait_for(lambda m: m[0] == SITE_DEV + "state/result", pump=dev.pump)
    assert json.loads(res)["ok"] and json.loads(res)["rev"] == 5
    assert json.loads((tmp_path / "config.json").read_text())["rev"] == 5
    assert not (tmp_path / "config.json.tmp").exists()

    # A bad one is refused with a fix-it message and changes nothing.
    collector.publish(SITE_DEV + "config", json.dumps({"brightness": 7}), retain=True)
    dev.cmd("audio 1")
    _, res, _ = collector.wait_for(
        lambda m: m[0] == SITE_DEV + "state/result" and b"false" in m[1], pump=dev.pump
    )
    assert "between 0 and 1" in json.loads(res)["detail"]
    assert json.loads((tmp_path / "config.json").read_text())["rev"] == 5

    collector.publish(SITE_DEV + "cmd/ping", b"")
    dev.cmd("audio 1")
    collector.wait_for(
        lambda m: m[0] == SITE_DEV + "state/result" and b"pong" in m[1], pump=dev.pump
    )
    dev.close()


def _tiny_model(name: bytes = b"tiny-test") -> bytes:
    """A compact model in firmware/core/nnrt.py's format: one dense unit over the 17 features and a
    sigmoid (bias -3: a calm score whatever the audio)."""
    head = b"CCM1" + struct.pack("<HHBB", 17, 1, 2, len(name)) + name
    dense = (
        struct.pack("<BHH", 1, 1, 17) + struct.pack("<17f", *([0.0] * 17)) + struct.pack("<f", -3.0)
    )
    return head + dense + struct.pack("<BHH", 6, 1, 0)


def test_model_file_commands_and_policy_config(
    host_build, headset_wav, tmp_path, mosquitto, collector
):
    model = _tiny_model()
    (tmp_path / "model.ccm").write_bytes(model)
    dev = Device(host_build, tmp_path, headset_wav, mosquitto.port, heap=HEAP)
    tele = json.loads(collector.wait_for(lambda m: m[0] == SITE_DEV + "tele", pump=dev.pump)[1])
    assert tele["model"] == "tiny-test"
    assert tele["model_hash"] == hashlib.sha256(model).hexdigest()

    def result(cmd: str) -> dict:
        collector.publish(SITE_DEV + "cmd/" + cmd, b"")
        dev.cmd("audio 1")
        _, res, _ = collector.wait_for(
            lambda m: m[0] == SITE_DEV + "state/result" and json.loads(m[1])["cmd"] == cmd,
            pump=dev.pump,
        )
        return json.loads(res)

    assert result("mute")["ok"]
    assert dev.cmd("state")["muted"]
    assert result("unmute")["ok"]
    ota = result("ota")  # this device was provisioned without an update server
    assert not ota["ok"] and "no ota_url" in ota["detail"]
    bad = result("selfdestruct")
    assert not bad["ok"] and "known: ping, tele, mute" in bad["detail"]
    collector.wait_for(
        lambda m: m[0] == SITE_DEV + "evt/button" and b"unmute" in m[1], pump=dev.pump
    )
    actions = [e["action"] for e in collector.events() if e["type"] == "button"]
    assert actions == ["mute", "unmute"]

    # Cue-policy settings are checked by the policy's own validator before anything changes.
    collector.publish(SITE_DEV + "config", json.dumps({"policy": {"stress_treshold": 0.7}}))
    dev.cmd("audio 1")
    _, res, _ = collector.wait_for(
        lambda m: m[0] == SITE_DEV + "state/result" and json.loads(m[1])["cmd"] == "config",
        pump=dev.pump,
    )
    assert not json.loads(res)["ok"] and "stress_threshold" in json.loads(res)["detail"]
    # A valid policy change is applied live: the conversation ends, a new pipeline is made.
    collector.publish(SITE_DEV + "config", json.dumps({"rev": 9, "policy": {"cue_budget": 2}}))
    dev.cmd("audio 1")
    _, res, _ = collector.wait_for(
        lambda m: m[0] == SITE_DEV + "state/result" and json.loads(m[1])["rev"] == 9,
        pump=dev.pump,
    )
    assert json.loads(res)["ok"] and json.loads(res)["detail"] == "applied rev 9"
    assert dev.cmd("audio 2")["t_ms"] > 0  # still listening, on the new pipeline
    dev.close()


def test_config_and_command_churn_in_the_heap_budget(
    host_build, host_rom, headset_wav, tmp_path, mosquitto, collector
):
    """Hours of a fleet in minutes: config messages (valid policy changes, unknown keys, broken
    JSON) and commands arrive again and again while audio runs, each loading its code on demand
    into a heap already cut up by the audio path. From the image at 96K every one is answered and the
    device keeps listening: the on-demand code never needs a block the heap no longer has."""
    dev = Device(host_build, tmp_path, headset_wav, mosquitto.port, heap=IMAGE_HEAP, rom=host_rom)
    collector.wait_for(lambda m: m[0] == SITE_DEV + "tele", pump=dev.pump)
    payloads = [
        (json.dumps({"rev": 0, "policy": {"cue_budget": 2}}), True),
        (json.dumps({"policy": {"stress_treshold": 0.7}}), False),
        ("{not json", False),
        (json.dumps({"rev": 0, "haptic": 0.4, "policy": {"cue_budget": 3, "min_gap_s": 5}}), True),
        (json.dumps({"brightness": 7, "policy": {"eu_mode": True, "stress_from_unknown": True}}), False),
    ]
    answered = last = 0
    for i in range(30):
        text, ok = payloads[i % len(payloads)]
        if ok:
            text = text.replace('"rev": 0', f'"rev": {100 + i}')
        collector.publish(SITE_DEV + "config", text)
        dev.cmd("audio 2")
        _, res, _ = collector.wait_for(
            lambda m, last=last: m[0] == SITE_DEV + "state/result"
            and json.loads(m[1])["cmd"] == "config"
            and json.loads(m[1])["up_ms"] > last,
            pump=dev.pump,
        )
        got = json.loads(res)
        last = got["up_ms"]
        assert got["ok"] is ok, (text, got)
        if ok:
            assert got["detail"] == f"applied rev {100 + i}"
        else:
            assert got["detail"].endswith("nothing changed"), got
        collector.publish(SITE_DEV + "cmd/" + ("tele" if i % 2 else "ping"), b"")
        dev.cmd("audio 1")
        answered += 1
    state = dev.cmd("audio 5")
    assert answered == 30 and state["mqtt"] and state["t_ms"] >= 30 * 3000
    print("lowest free heap over the churn:", state["heap_min"])
    dev.close()


def test_oversized_and_many_problem_configs_refused_cleanly(
    host_build, host_rom, headset_wav, tmp_path, mosquitto, collector
):
    """Bad input on a 96K heap (code from the image): a config bigger than a device takes is refused unread; one
    with dozens of unknown keys (top level or policy) gets a short reply naming the first few;
    the device keeps running and the next valid config applies."""
    dev = Device(host_build, tmp_path, headset_wav, mosquitto.port, heap=IMAGE_HEAP, rom=host_rom)
    collector.wait_for(lambda m: m[0] == SITE_DEV + "tele", pump=dev.pump)
    last = [0]

    def newer_result(m: tuple[str, bytes, bool]) -> bool:
        return (
            m[0] == SITE_DEV + "state/result"
            and json.loads(m[1])["cmd"] == "config"
            and json.loads(m[1])["up_ms"] > last[0]
        )

    def send(payload: str) -> dict:
        collector.publish(SITE_DEV + "config", payload)
        dev.cmd("audio 1")
        got = json.loads(collector.wait_for(newer_result, pump=dev.pump)[1])
        last[0] = got["up_ms"]
        return got

    huge = send(json.dumps({"note": "x" * 3000}))
    assert not huge["ok"] and "a device takes at most 2048" in huge["detail"]
    keys = send(json.dumps({f"k{i:03d}": i for i in range(30)}))
    assert not keys["ok"] and "and 25 more are not config keys" in keys["detail"]
    assert len(keys["detail"]) < 400
    # So many keys that parsing them needs more contiguous heap than is left: still refused
    # with a reason, and the device carries on.
    lots = send(json.dumps({f"k{i:03d}": i for i in range(180)}))
    assert not lots["ok"] and lots["detail"].endswith("nothing changed")
    policy = send(json.dumps({"policy": {f"setting_{i:02d}": 1 for i in range(20)}}))
    assert not policy["ok"] and policy["detail"].endswith("; and 15 more; nothing changed")
    ok = send(json.dumps({"rev": 3, "policy": {"cue_budget": 2}}))
    assert ok["ok"] and ok["detail"] == "applied rev 3"
    assert dev.cmd("audio 2")["mqtt"]
    # A message bigger than the whole free heap: read past without being kept (firmware/headset/net.py
    # keeps at most 2200 bytes of a message), the session stays, the device keeps listening.
    connects = dev.cmd("state")["connects"]
    collector.publish(SITE_DEV + "cmd/ping", b"x" * 60_000)
    got = collector.wait_for(
        lambda m: m[0] == SITE_DEV + "state/result" and json.loads(m[1])["cmd"] == "ping",
        pump=dev.pump,
    )
    assert json.loads(got[1])["ok"]
    state = dev.cmd("audio 3")
    assert state["t_ms"] > 0 and state["mqtt"] and state["connects"] == connects
    logs = [x["log"] for x in dev.lines if "log" in x]
    assert any("message of 60038 bytes on" in x and "skipped" in x for x in logs), logs[-5:]
    collector.all.clear()
    collector.publish(SITE_DEV + "cmd/ping", b"")
    got = collector.wait_for(
        lambda m: m[0] == SITE_DEV + "state/result" and json.loads(m[1])["cmd"] == "ping",
        pump=dev.pump,
    )
    assert json.loads(got[1])["ok"]
    dev.close()


def test_device_asyncio_main_loop_in_real_time(
    host_build, headset_wav, tmp_path, mosquitto, collector
):
    """firmware.headset.app.run, the device's own main loop (audio, outputs/button every 20 ms, network
    every 200 ms as asyncio tasks), with the fake I2S delivering 16 kHz in real time."""
    flash = tmp_path / "flash"
    flash.mkdir()
    lines = run_through(host_build, flash, headset_wav, mosquitto.port, "--asyncio", "4",
                        heap=ASYNC_HEAP)  # fmt: skip
    done = next(x["done"] for x in lines if "done" in x)
    # Audio arrived at its own pace, not faster (less when this shared machine is busy).
    assert 1500 <= done["t_ms"] <= 5000
    assert done["wdt_feeds"] >= 50  # the outputs task kept its 20 ms beat beside the audio
    assert done["mqtt"] and done["sent"] >= 1 and done["queue"] == 0
    collector.wait_for(lambda m: m[0] == SITE_DEV + "tele")
    evt = json.loads(collector.wait_for(lambda m: m[0] == SITE_DEV + "evt/conversation")[1])
    assert evt["phase"] == "start" and evt["up_ms"] >= 1500  # the staff starts at 1.5 s
