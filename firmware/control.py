# The headset's occasional work, imported by firmware.app when there is some and dropped again
# (app._forget), so its code does not sit in the heap in between: what the companion sent
# (commands, config), telemetry every tele_s, and the OTA hand-over after an update. Functions
# of the Device `dev`; each is small, so loading them needs no large block of the heap.
import gc
import json
import os

from firmware.pipeline import PLACEHOLDER_MODEL
from firmware.version import FIRMWARE

COMMANDS = ("ping", "tele", "mute", "unmute", "ack", "reboot", "ota")


def run(dev, up_ms, budget):
    """Handle what the companion sent, deliver up to `budget` events, then send telemetry when
    it is due (in that order, as every network step does)."""
    while dev._pending:
        topic, payload = dev._pending.pop(0)
        leaf = topic.decode()[len(dev.link.prefix) :]
        if leaf == "config":
            dev.apply_config(payload, up_ms)
        else:
            command(dev, leaf[4:], up_ms)  # cmd/<name>
    dev.deliver(budget)
    if up_ms >= dev._tele_next and dev.link.up:
        dev._tele_next = up_ms + dev.cfg["tele_s"] * 1000
        if dev.link.publish("tele", json.dumps(telemetry(dev, up_ms))) and not dev._healthy:
            dev._healthy = True
            confirm_update(dev)


def command(dev, name, up_ms):
    ok = True
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
        dev._reboot = True
    elif name == "ota":
        ok, detail = update(dev)
    else:
        ok = False
        detail = "unknown command; known: " + ", ".join(COMMANDS)
    dev._reply(name, ok, detail, up_ms)


def update(dev):
    """cmd/ota: fetch, verify and switch to the update the companion offers, then reboot into it
    on trial (firmware/ota.py, firmware/ota_boot.py). Returns (ok, detail) for the reply."""
    if not dev.ident.get("ota_url"):
        return False, "no ota_url in device.json; re-provision with --ota-url"
    from firmware import ota

    try:
        version = ota.update_from_companion(dev.ident)
    except (ota.OtaError, OSError, ValueError) as e:
        return False, "update refused: %s" % e
    if version is None:
        return True, "no update offered"
    dev._reboot = True
    return True, "updated to %s; rebooting" % version


def confirm_update(dev):
    """Connected and reporting: tell the A/B loader (firmware/ota_boot.py, issue 9) that this
    bundle is good, so it is not rolled back. Only on devices that were updated over the air."""
    try:
        os.stat(dev.root + "ota.json")
    except OSError:
        return
    from firmware import ota

    ota.confirm()
    base = dev.ident.get("ota_url")
    if base:
        try:
            ota.report_outcome(base, dev.ident["site"], dev.ident["device"])
        except (OSError, ValueError) as e:
            dev.link.log("ota report failed: %r" % e)  # the companion sees it next boot
    from firmware.app import _forget

    _forget("ota")  # needed once per boot: give its memory back


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
    return t
