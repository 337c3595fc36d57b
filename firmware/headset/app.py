# The headset application: audio -> pipeline -> cue on LED/motor + event on flash queue -> MQTT.
#
# `Device` holds the logic and takes the hardware and the time as arguments, so the same object
# runs on the ESP32 (firmware/headset/main.py, asyncio tasks below) and in the host runner
# (firmware/host/runner.py, stepped on audio time, faster than real time). Everything that reads
# or changes a Device is one of its methods; the functions beside it (the files of identity,
# boot counter and A/B loader, firmware/headset/config.py) take plain values, not the Device.
import gc
import json
import os
from time import ticks_diff, ticks_us  # type: ignore[attr-defined]  # (MicroPython)

from firmware.core import events
from firmware.core.pipeline import PLACEHOLDER_MODEL, Pipeline, policy_settings
from firmware.core.store import Queue
from firmware.headset.net import Link
from firmware.headset.outputs import Outputs
from firmware.headset.version import FIRMWARE

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_NTP_RETRY_MS = const(60000)
_NTP_RESYNC_MS = const(21600000)  # 6 h: the RTC drifts a few seconds a day
_PENDING_MAX = const(4)
# A config message's size limit: every setting written out is ~1.4 KB; a bigger payload is
# refused unread, before it can take the heap the checks need.
_CONFIG_MAX = const(2048)
_PROBLEMS_MAX = const(10)  # problems named in a refusal (then "and N more")
_STABLE_MS = const(300000)  # running this long clears the boot loader's failed-start count

COMMANDS = ("ping", "tele", "mute", "unmute", "ack", "reboot", "ota")


def identity(root):
    """device.json, written by provisioning: site, device, Wi-Fi, MQTT, OTA (docs/firmware.md)."""
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


def _pointer(root):
    """The A/B loader's pointer (ota.json, the format ota_boot.py and ota.py share), or None."""
    try:
        with open(root + "ota.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _stable(root):
    # This bundle has run _STABLE_MS: the A/B loader's count of starts without that goes back
    # to 0 (ota_boot.py: too many in a row roll back or stop in safe mode).
    p = _pointer(root)
    if p and p.get("starts"):
        p["starts"] = 0
        with open(root + "ota.json.tmp", "w") as f:
            json.dump(p, f)
        os.rename(root + "ota.json.tmp", root + "ota.json")


def _policy_problems(p):
    """What the cue policy would refuse in the settings `p` of a config, as a headset runs it."""
    from firmware.core.cue_settings import checked

    return checked(policy_settings({"policy": p}))[1]


def release(*names):
    """Let the modules `names` go (sys.modules and the attribute of their package both hold
    them): code needed only at boot or for a config message, loaded again in one piece the next
    time it is needed."""
    import sys

    for name in names:
        sys.modules.pop(name, None)
        package, _, leaf = name.rpartition(".")
        holder = sys.modules.get(package)
        if holder is not None and hasattr(holder, leaf):
            delattr(holder, leaf)


def _config():
    """firmware/headset/config.py: the config file and its checks (see _CHECKS)."""
    from firmware.headset import config

    return config


# The config checks: the config file's (firmware/headset/config.py) and the cue-settings table
# with its validator (firmware/core/cue_settings.py, whose rows are made at import). The headset
# needs them at boot and for a config message and nowhere else; resident they would hold ~6 KB
# of the heap on the 64-bit unix port, which the 64 KB headset demo does not have to spare
# (tests/test_fw_romfs.py). They are released after each use and loaded again in one piece.
_CHECKS = ("firmware.headset.config", "firmware.core.cue_settings")


class Device:
    def __init__(self, hw, root="", rand=os.urandom, log=print, model=None):
        # model: (nnrt.Model or None, sha256 hex or None) from firmware.headset.modelfile's
        # load_model, loaded by the boot code before the rest of the firmware (its weights then
        # sit in one piece at the bottom of the heap); None = load it here.
        self.hw = hw
        self.root = root
        self.rand = rand  # for a new pipeline when a config changes the policy settings
        self.ident = identity(root)
        self.boot = next_boot(root)
        if model is None:
            from firmware.headset.modelfile import load_model

            model = load_model(root)
            gc.collect()
        self.model_hash = model[1]
        # The feature buffers (the largest long-lived blocks after the weights) before the
        # config is read: afterwards a 2 KB run may be cut up by what reading it leaves.
        self.pipeline = Pipeline(None, rand, model[0])
        self.cfg, self.config_error = _config().load(root, _policy_problems)
        release(*_CHECKS)  # the policy below needs the settings table only: room for it
        gc.collect()
        # The policy next, while nothing else long-lived is made: it reads the settings table,
        # which goes again before the queue, outputs and link take its room.
        self.pipeline.configure(self.cfg, rand)
        release(*_CHECKS)
        gc.collect()
        if self.config_error:
            log("config: " + self.config_error)
        self.stamper = events.Stamper(self.ident["site"], self.ident["device"], self.boot)
        self.queue = Queue(root + "queue", self.ident.get("queue_max", 500))
        self.outputs = Outputs(hw.led, hw.motor, self.cfg["brightness"], self.cfg["haptic"])
        hw.button.long_press_ms = self.cfg["long_press_ms"]
        gc.collect()  # the queue's scan of its file makes garbage
        self.link = Link(hw.wlan, self.ident, self._on_message, log, root)
        self.muted = self.cfg["muted"]
        # Unix time in ms (an int: no float object held) at up_ms == 0, once NTP has answered
        self.unix_at_boot = None
        self._ntp_next = 0
        self._tele_next = 0
        self._pending = []
        self._healthy = False
        self.sent = 0
        self.rejected = 0  # events the schema refused (a bug upstream; shown in telemetry)
        self.heap_min = gc.mem_free()
        # Processing time of the audio since the last telemetry (telemetry() reports and
        # resets it): the real-time factor and the slowest hop, in µs (small ints).
        self.busy_us = self.hop_max_us = self.busy_from = 0
        self.stable = False  # ran _STABLE_MS (ota.json's failed-start count cleared)

    # ---- time --------------------------------------------------------------------------------

    def ts(self, up_ms):
        t0 = self.unix_at_boot
        return None if t0 is None else (t0 + up_ms) / 1000

    # ---- audio side: never waits for the network ---------------------------------------------

    def audio(self, n, up_ms):
        """Process the `n` samples now in hw.mic.samples (the hop ending at up_ms)."""
        if self.muted:
            return
        t0 = ticks_us()
        for etype, fields in self.pipeline.process(self.hw.mic.samples, n, up_ms / 1000):
            if etype == "cue":
                self.outputs.show(fields["cue"], up_ms, fields["level"])
            self.emit(etype, fields, up_ms)
        t = ticks_diff(ticks_us(), t0)
        self.busy_us += t
        if t > self.hop_max_us:
            self.hop_max_us = t

    def emit(self, etype, fields, up_ms):
        try:
            ev = self.stamper.stamp(etype, fields, up_ms, self.ts(up_ms))  # checks it
            data = events.encode(ev, True)
        except events.EventError as e:
            # A stage produced something the closed schema refuses: drop it, count it, keep
            # listening (a crash here would take the device down for one bad field).
            self.rejected += 1
            self.link.log("event refused: %s" % e)
            return
        self.queue.put(data)

    def tick(self, up_ms):
        """Outputs, button, watchdog: call every ~20 ms (or after every hop on the host)."""
        self.outputs.tick(up_ms)
        action = self.hw.button.poll(up_ms)
        if action == "ack":
            self.outputs.acknowledge(up_ms)
            self.emit("button", {"action": "ack"}, up_ms)
        elif action == "mute":
            self.set_muted(not self.muted, up_ms)
        if self.hw.wdt is not None:
            self.hw.wdt.feed()
        if up_ms >= _STABLE_MS and not self.stable:
            self.stable = True
            _stable(self.root)

    def set_muted(self, muted, up_ms):
        if muted == self.muted:
            return
        self.muted = muted
        if muted:
            # A muted stretch ends the conversation being followed.
            for etype, fields in self.pipeline.finish(up_ms / 1000):
                self.emit(etype, fields, up_ms)
        self.outputs.show("mute" if muted else "unmute", up_ms)
        self.emit("button", {"action": "mute" if muted else "unmute"}, up_ms)

    # ---- network side ------------------------------------------------------------------------

    def network(self, up_ms):
        """Links, incoming config/commands, queued events, telemetry. Never waits on the network
        (firmware/headset/net.py); call every ~200 ms."""
        was_up = self.link.up
        if not self.link.service(up_ms):
            self.deliver()  # events acknowledged before the link went leave the queue
            return
        if not was_up:
            self._tele_next = up_ms  # fresh session: report health at once
        if up_ms >= self._ntp_next and self.hw.ntp is not None:  # the clock, when due
            try:
                self.unix_at_boot = int(self.hw.ntp() * 1000) - up_ms
                self._ntp_next = up_ms + _NTP_RESYNC_MS
            except (OSError, IndexError):
                self._ntp_next = up_ms + _NTP_RETRY_MS
        self.deliver()  # acknowledged events leave the queue, the next one goes out
        reboot = False
        while self._pending:  # config and commands that arrived in service()
            topic, payload = self._pending.pop(0)
            leaf = topic.decode()[len(self.link.prefix) :]
            if leaf == "config":
                if payload:  # empty: the retained config was cleared; keep what we have
                    self._config_message(payload, up_ms)
            else:  # cmd/<name>
                reboot = self._command(leaf[4:], up_ms) or reboot
        if up_ms >= self._tele_next and self.link.up:
            self._tele_next = up_ms + self.cfg["tele_s"] * 1000
            self._send_telemetry(up_ms)
        if reboot and self.hw.reset is not None:
            self.hw.reset()

    def _reply(self, name, ok, detail, up_ms):
        """The answer to a command or a config message, on state/result."""
        self.link.publish("state/result", json.dumps(
            {"cmd": name, "ok": ok, "detail": detail, "up_ms": up_ms, "rev": self.cfg["rev"]}
        ))  # fmt: skip

    # ---- config messages ---------------------------------------------------------------------

    def _config_message(self, payload, up_ms):
        # A config from the companion (retained: it arrives on every connect): checked, saved
        # and applied live, or refused with every problem named and nothing changed.
        n = payload if isinstance(payload, int) else len(payload)  # int: skipped unread
        if n > _CONFIG_MAX:
            errs = ["config is %d bytes; a device takes at most %d" % (n, _CONFIG_MAX)]
        else:
            try:
                new, errs = _config().parse(payload, _policy_problems)
            except MemoryError:  # a payload odd enough to need more than the heap has left
                errs = ["not enough memory on the device to check this config"]
            if not errs:
                self._apply_config(_config().merged(new), up_ms)
            release(*_CHECKS)
            gc.collect()
        if errs:
            n = len(errs) - _PROBLEMS_MAX
            self._reply("config", False, "; ".join(errs[:_PROBLEMS_MAX]) + (
                "; and %d more" % n if n > 0 else "") + "; nothing changed", up_ms)  # fmt: skip

    def _apply_config(self, new, up_ms):
        """Save the checked, merged config `new` and apply it live, then reply. New cue-policy
        settings end the open conversation and start a new policy."""
        if new == self.cfg and not self.config_error:
            return  # the retained copy arrives on every reconnect: no flash write, no reply
        _config().save(new, self.root)
        old, self.cfg = self.cfg, new
        self.config_error = None
        self.outputs.brightness = new["brightness"]
        self.outputs.haptic = new["haptic"]
        self.hw.button.long_press_ms = new["long_press_ms"]
        self._tele_next = up_ms
        if policy_settings(new) != policy_settings(old):
            for etype, fields in self.pipeline.finish(up_ms / 1000):
                self.emit(etype, fields, up_ms)
            gc.collect()
            self.pipeline.configure(new, self.rand)
        self._reply("config", True, "applied rev %d" % new["rev"], up_ms)

    # ---- commands, telemetry, updates --------------------------------------------------------

    def _command(self, name, up_ms):
        """cmd/<name>: do it and reply. Returns True when the device should reboot afterwards."""
        ok = True
        reboot = False
        if name == "ping":
            detail = "pong"
        elif name == "tele":
            self._tele_next = up_ms
            detail = "telemetry follows"
        elif name == "mute" or name == "unmute":
            self.set_muted(name == "mute", up_ms)
            detail = name + "d"
        elif name == "ack":
            self.outputs.acknowledge(up_ms)
            detail = "acknowledged"
        elif name == "reboot":
            detail = "rebooting"
            reboot = True
        elif name == "ota":
            ok, detail, reboot = self._update()
        else:
            ok = False
            detail = "unknown command; known: " + ", ".join(COMMANDS)
        self._reply(name, ok, detail, up_ms)
        return reboot

    def _update(self):
        """cmd/ota: fetch, verify and switch to the update the companion offers, then reboot
        into it on trial (firmware/headset/ota.py, ota_boot.py). Returns (ok, detail, reboot)."""
        if not self.ident.get("ota_url"):
            return False, "no ota_url in device.json; re-provision with --ota-url", False
        from firmware.headset import ota  # only on this command: most boots never need it

        if self.hw.wdt is not None:
            ota.alive = self.hw.wdt.feed  # the download runs inside this network step
        try:
            version = ota.update_from_companion(self.ident)
        except (ota.OtaError, OSError, ValueError) as e:
            return False, "update refused: %s" % e, False
        if version is None:
            return True, "no update offered", False
        return True, "updated to %s; rebooting" % version, True

    def _confirm_update(self):
        """Connected and reporting: tell the A/B loader (firmware/headset/ota_boot.py) that this
        bundle is good, so it is not rolled back, and the companion how the update ended. Only
        after an update: otherwise the OTA module is not loaded at all. Returns False when it
        must be tried again (no memory to load the OTA code now: the next telemetry retries)."""
        p = _pointer(self.root)
        trial = p is not None and p.get("state") == "trial"
        report = (p is not None and self.ident.get("ota_url") and p.get("update")
                  and not p.get("reported", True))  # fmt: skip
        if not (trial or report):
            return True
        gc.collect()
        try:
            from firmware.headset import ota  # only after an update
        except MemoryError:
            self.link.log("ota confirm deferred: not enough memory to load it now")
            return False
        ota.confirm()
        if report or trial and self.ident.get("ota_url"):
            try:
                ota.report_outcome(self.ident)
            except (OSError, ValueError) as e:
                self.link.log("ota report failed: %r" % e)  # the companion sees it next boot
        return True

    def _send_telemetry(self, up_ms):
        """Telemetry (due every tele_s, at each connect, after a config change or cmd/tele);
        the first one that reaches the broker after an update confirms it."""
        if self.link.publish("tele", json.dumps(self.telemetry(up_ms))) and not self._healthy:
            self._healthy = self._confirm_update()

    def telemetry(self, up_ms):
        """The health report, and the start of the next measuring period."""
        gc.collect()
        free = gc.mem_free()
        if free < self.heap_min:
            self.heap_min = free
        hw = self.hw
        bat = hw.battery
        volts = bat.volts() if bat is not None else None
        try:
            rssi = hw.wlan.status("rssi")
        except (OSError, ValueError):
            rssi = None
        model = self.pipeline.model
        busy_ms = up_ms - self.busy_from
        t = {
            "fw": FIRMWARE,
            "model": model.name if model is not None else PLACEHOLDER_MODEL,
            "model_hash": self.model_hash,
            "boot": self.boot,
            "up_s": up_ms // 1000,
            "heap_free": free,
            "heap_min": self.heap_min,
            "rssi": rssi,
            "batt_v": round(volts, 2) if volts is not None else None,
            "batt_pct": bat.percent(volts) if bat is not None else None,
            "mic_ok": hw.mic.ok,
            # Speed and lost audio (docs/firmware.md, "Timing"): processing time per audio time
            # and the slowest hop since the last report; audio the I2S DMA ring overwrote since
            # boot (asyncio main loop only; 0 on the host runner).
            "rtf": round(self.busy_us / 1000 / busy_ms, 4) if busy_ms > 0 else None,
            "hop_max_ms": round(self.hop_max_us / 1000, 2),
            "audio_lost_ms": hw.lost_ms,
            "muted": self.muted,
            "queue": len(self.queue),
            "dropped": self.queue.dropped,
            "sent": self.sent,
            "rejected": self.rejected,
            "config_rev": self.cfg["rev"],
            "config_error": self.config_error[:200] if self.config_error else None,
        }
        ts = self.ts(up_ms)
        if ts is not None:
            t["ts"] = ts
        self.busy_us = self.hop_max_us = 0
        self.busy_from = up_ms
        return t

    # ---- events out --------------------------------------------------------------------------

    def deliver(self):
        """Send queued events in order, one in flight (QoS 1): each leaves the queue when the
        broker has acknowledged it, which a later network step sees. Never waits."""
        link = self.link
        while link.acked:  # PUBACKs since the last step: the head of the queue was delivered
            link.acked -= 1
            self.queue.pop()
            self.sent += 1
        while link.up and not link.unacked:
            data = self.queue.peek()
            if data is None:
                return
            try:
                ev = json.loads(data)
                etype = ev["type"]
            except (ValueError, KeyError, TypeError):
                link.log("queue: dropping unreadable entry")
                self.queue.pop()
                continue
            if "ts" not in ev and ev.get("boot") == self.boot and self.unix_at_boot is not None:
                # Queued before the clock was known: up_ms since this boot gives its time now.
                ev["ts"] = self.ts(ev["up_ms"])
                try:
                    data = events.encode(ev)
                except events.EventError:
                    pass  # send it as queued, without ts
            link.publish("evt/" + etype, data, False, 1)
            return

    def _on_message(self, topic, payload):
        # Link's callback for our config and cmd/+ topics, called from inside service(): only
        # note it here.
        if len(self._pending) < _PENDING_MAX:
            self._pending.append((topic, payload))


# ---- on the ESP32: three asyncio tasks --------------------------------------------------------


async def run(dev, i2s):
    """Audio, outputs/button and network as separate tasks. No step waits on the network
    (firmware/headset/net.py); what a step takes in CPU the I2S DMA buffer absorbs (main.py). The audio
    task keeps hw.late_ms (how far behind the microphone it fell, at most) and hw.lost_ms (audio
    the DMA ring overwrote while it was behind); an I2S error sets hw.ok False (telemetry
    mic_ok) and the task tries again a second later instead of ending the loop."""
    import asyncio
    import time

    hw = dev.hw
    last = [time.ticks_ms()]
    up = [0]

    def now():
        t = time.ticks_ms()
        up[0] += time.ticks_diff(t, last[0])  # accumulate: ticks_ms wraps, uptime must not
        last[0] = t
        return up[0]

    async def audio():
        reader = asyncio.StreamReader(i2s)
        view = memoryview(hw.samples)
        n = len(view)
        t0 = None  # ticks_ms when the DMA ring was last seen empty: the audio clock's origin
        heard = 0  # samples read since t0
        while True:
            got = 0
            try:
                while got < n:  # a read may return part of a hop: fill the whole hop first
                    k = await reader.readinto(view[got:]) // 2
                    got += k
                    if got < n:  # the ring is empty now: reads are level with the microphone
                        t = time.ticks_ms()
                        if t0 is None:
                            t0 = t
                            heard = -got
                        else:  # behind by more than it could hold: the difference was lost
                            hw.lost_ms = max(hw.lost_ms, time.ticks_diff(t, t0) - (heard + got) // 16 - 20)
            except OSError as e:
                if hw.ok:  # newly failed: say so now, not at the next telemetry
                    hw.ok = False
                    dev._tele_next = 0
                dev.link.log("microphone: %r" % e)
                await asyncio.sleep_ms(1000)
                t0 = None
                continue
            if not hw.ok:
                hw.ok = True
                dev._tele_next = 0
            heard += n
            if t0 is not None:
                hw.late_ms = max(hw.late_ms, time.ticks_diff(time.ticks_ms(), t0) - heard // 16)
            dev.audio(n, now())

    async def outputs():
        while True:
            dev.tick(now())
            await asyncio.sleep_ms(20)

    async def network():
        while True:
            t = time.ticks_us()
            dev.network(now())
            hw.net_max_us = max(hw.net_max_us, time.ticks_diff(time.ticks_us(), t))
            await asyncio.sleep_ms(200)

    await asyncio.gather(audio(), outputs(), network())
