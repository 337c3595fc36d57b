# The headset's boot-only and occasional work, imported by firmware.headset.app when there is some and
# dropped again (app._forget), so its code does not sit in the heap in between: the boot's
# identity and boot counter, commands from the companion, telemetry every tele_s, and the OTA
# hand-over after an update. (Config messages are firmware/headset/config.py's apply(): a config message
# then needs the config code and the settings validator only, not this module too.) Functions of the Device `dev`; each is small,
# so loading them needs no large block of the heap.
import gc
import json
import os

from firmware.core.pipeline import PLACEHOLDER_MODEL
from firmware.headset.app import _forget, reply
from firmware.headset.version import FIRMWARE

COMMANDS = ("ping", "tele", "mute", "unmute", "ack", "reboot", "ota")


def identity(root):
    try:
        with open(root + "device.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        raise RuntimeError(
            "device.json is missing or unreadable on flash; provision the device with "
            "'calmcue device provision' (docs/firmware.md lists its keys)"
        )


def next_boot(root):
    """Boot counter on flash, bumped once per start: the companion sees reboots as (boot, seq)."""
    try:
        with open(root + "boot") as f:
            n = int(f.read()) + 1
    except (OSError, ValueError):
        n = 1
    with open(root + "boot.tmp", "w") as f:
        f.write(str(n))
    os.rename(root + "boot.tmp", root + "boot")
    return n


def tele(dev, up_ms):
    """Telemetry (due every tele_s, at each connect, after a config change or cmd/tele); the
    first one that reaches the broker after an update confirms it."""
    if dev.link.publish("tele", json.dumps(telemetry(dev, up_ms))) and not dev._healthy:
        dev._healthy = True
        confirm_update(dev)


def command(dev, name, up_ms):
    """cmd/<name>: do it and reply. Returns True when the device should reboot afterwards."""
    ok = True
    reboot = False
    if name == "ping":
        detail = "pong"
    elif name == "tele":
        dev._tele_next = up_ms
        detail = "telemetry follows"
    elif name == "mute" or name == "unmute":
        dev.set_muted(name == "mute", up_ms)
        detail = name + "d"
    elif name == "ack":
        dev.outputs.acknowledge(up_ms)
        detail = "acknowledged"
    elif name == "reboot":
        detail = "rebooting"
        reboot = True
    elif name == "ota":
        ok, detail, reboot = update(dev)
    else:
        ok = False
        detail = "unknown command; known: " + ", ".join(COMMANDS)
    reply(dev, name, ok, detail, up_ms)
    return reboot


def update(dev):
    """cmd/ota: fetch, verify and switch to the update the companion offers, then reboot into it
    on trial (firmware/headset/ota.py, firmware/headset/ota_boot.py). Returns (ok, detail, reboot)."""
    if not dev.ident.get("ota_url"):
        return False, "no ota_url in device.json; re-provision with --ota-url", False
    from firmware.headset import ota

    if dev.hw.wdt is not None:
        ota.alive = dev.hw.wdt.feed  # the download runs inside this network step
    try:
        version = ota.update_from_companion(dev.ident)
    except (ota.OtaError, OSError, ValueError) as e:
        return False, "update refused: %s" % e, False
    if version is None:
        return True, "no update offered", False
    return True, "updated to %s; rebooting" % version, True


def confirm_update(dev):
    """Connected and reporting: tell the A/B loader (firmware/headset/ota_boot.py, issue 9) that this
    bundle is good, so it is not rolled back. Only on devices that were updated over the air."""
    try:
        os.stat(dev.root + "ota.json")
    except OSError:
        return
    from firmware.headset import ota

    ota.confirm()
    if dev.ident.get("ota_url"):
        try:
            ota.report_outcome(dev.ident)
        except (OSError, ValueError) as e:
            dev.link.log("ota report failed: %r" % e)  # the companion sees it next boot
    _forget("headset.ota")  # needed once per boot: give its memory back


def telemetry(dev, up_ms):
    gc.collect()
    free = gc.mem_free()
    if free < dev.heap_min:
        dev.heap_min = free
    hw = dev.hw
    bat = hw.battery
    volts = bat.volts() if bat is not None else None
    try:
        rssi = hw.wlan.status("rssi")
    except (OSError, ValueError):
        rssi = None
    model = dev.pipeline.model
    t = {
        "fw": FIRMWARE,
        "model": model.name if model is not None else PLACEHOLDER_MODEL,
        "model_hash": dev.model_hash,
        "boot": dev.boot,
        "up_s": up_ms // 1000,
        "heap_free": free,
        "heap_min": dev.heap_min,
        "rssi": rssi,
        "batt_v": round(volts, 2) if volts is not None else None,
        "batt_pct": bat.percent(volts) if bat is not None else None,
        "mic_ok": hw.mic.ok,
        # Speed and lost audio (docs/firmware.md, "Timing"): processing time per audio time and
        # the slowest hop since the last report; audio the I2S DMA ring overwrote since boot
        # (asyncio main loop only; 0 on the host runner).
        "rtf": round(dev.busy_us / 1000 / (up_ms - dev.busy_from), 4) if up_ms > dev.busy_from else None,
        "hop_max_ms": round(dev.hop_max_us / 1000, 2),
        "audio_lost_ms": hw.lost_ms,
        "muted": dev.muted,
        "queue": len(dev.queue),
        "dropped": dev.queue.dropped,
        "sent": dev.sent,
        "rejected": dev.rejected,
        "config_rev": dev.cfg["rev"],
        "config_error": dev.config_error[:200] if dev.config_error else None,
    }
    ts = dev.ts(up_ms)
    if ts is not None:
        t["ts"] = ts
    dev.busy_us = dev.hop_max_us = 0
    dev.busy_from = up_ms
    return t
