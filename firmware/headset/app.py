# The headset application: audio -> pipeline -> cue on LED/motor + event on flash queue -> MQTT.
#
# `Device` holds the logic and takes the hardware and the time as arguments, so the same object
# runs on the ESP32 (firmware/headset/main.py, asyncio tasks below) and in the host runner
# (firmware/host/runner.py, stepped on audio time, faster than real time).
import gc
import json
import os
from time import ticks_diff, ticks_us  # type: ignore[attr-defined]  # (MicroPython)

from firmware.core import events
from firmware.core.pipeline import Pipeline, policy_settings
from firmware.core.store import Queue
from firmware.headset.net import Link
from firmware.headset.outputs import Outputs

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


def _config():
    # firmware.headset.config is needed at boot and when a config arrives, not in between: imported on
    # demand and dropped after use (_forget_config), its code does not sit in the heap.
    from firmware.headset import config

    return config


def _forget(name):
    """Drop the module firmware.<name>, e.g. "headset.config" (sys.modules and the attribute
    of its package both hold it)."""
    import sys

    package, _, leaf = ("firmware." + name).rpartition(".")
    sys.modules.pop("firmware." + name, None)
    holder = sys.modules.get(package)
    if holder is not None and hasattr(holder, leaf):
        delattr(holder, leaf)


def _forget_config():
    # The settings validator too (firmware/core/cue_settings.py): loaded to check the config, used
    # again by Policy() when a pipeline is made, which keeps only what it needs.
    _forget("headset.config")
    _forget("core.cue_settings")


def _stable(root):
    # This bundle has run _STABLE_MS: the A/B loader's count of starts without that goes back
    # to 0 (ota_boot.py: too many in a row roll back or stop in safe mode).
    try:
        with open(root + "ota.json") as f:
            p = json.load(f)
    except (OSError, ValueError):
        return
    if p.get("starts"):
        p["starts"] = 0
        with open(root + "ota.json.tmp", "w") as f:
            json.dump(p, f)
        os.rename(root + "ota.json.tmp", root + "ota.json")


def reply(dev, name, ok, detail, up_ms):
    """The answer to a command or a config message, on state/result."""
    dev.link.publish("state/result", json.dumps(
        {"cmd": name, "ok": ok, "detail": detail, "up_ms": up_ms, "rev": dev.cfg["rev"]}
    ))  # fmt: skip


def _policy_problems(p):
    from firmware.core.cue_settings import checked

    return checked(policy_settings({"policy": p}))[1]


class Device:
    def __init__(self, hw, root="", rand=os.urandom, log=print, model=None):
        # model: (nnrt.Model or None, sha256 hex or None) from firmware.headset.modelfile.load_model,
        # loaded by the boot code before the rest of the firmware (its weights then sit in
        # one piece at the bottom of the heap); None = load it here.
        self.hw = hw
        self.root = root
        self.rand = rand  # for a new pipeline when a config changes the policy settings
        # The boot-only code is in firmware.headset.control, with the occasional work. Loading it now,
        # while the heap is in one piece, also puts its names in the qstr pool and its slot in
        # sys.modules, so loading it again later needs only small blocks.
        from firmware.headset import control

        self.ident = control.identity(root)
        self.boot = control.next_boot(root)
        if model is None:
            from firmware.headset.modelfile import load_model

            model = load_model(root)
            gc.collect()
        self.model_hash = model[1]
        # The feature buffers (the largest long-lived blocks after the weights) before the
        # config code comes and goes: afterwards a 2 KB run may be cut up by what it leaves.
        self.pipeline = Pipeline(None, rand, model[0])
        self.cfg, self.config_error = _config().load(root, _policy_problems)
        # The settings validator stays for the pipeline's Policy below (loaded once per boot,
        # not twice), then goes with _forget_config().
        _forget("headset.config")
        if self.config_error:
            log("config: " + self.config_error)
        self.stamper = events.Stamper(self.ident["site"], self.ident["device"], self.boot)
        self.queue = Queue(root + "queue", self.ident.get("queue_max", 500))
        self.outputs = Outputs(hw.led, hw.motor, self.cfg["brightness"], self.cfg["haptic"])
        hw.button.long_press_ms = self.cfg["long_press_ms"]
        del control
        _forget("headset.control")
        gc.collect()  # boot makes garbage (config, queue scan): clear it before the big buffers
        self.pipeline.configure(self.cfg, rand)
        _forget_config()
        gc.collect()
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
        # Processing time of the audio since the last telemetry (control.telemetry reports and
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
        # Occasional work (config, commands, telemetry): its code is loaded only for it, one
        # module at a time (config + settings validator, or control), then dropped.
        reboot = False
        while self._pending:
            topic, payload = self._pending.pop(0)
            leaf = topic.decode()[len(self.link.prefix) :]
            if leaf == "config":
                if payload:  # empty: the retained config was cleared; keep what we have
                    self._config_message(payload, up_ms)
            else:  # cmd/<name>
                from firmware.headset import control

                reboot = control.command(self, leaf[4:], up_ms) or reboot
                _forget("headset.control")
        if up_ms >= self._tele_next and self.link.up:
            self._tele_next = up_ms + self.cfg["tele_s"] * 1000
            gc.collect()  # control's code next: let it into holes the garbage was keeping
            from firmware.headset import control

            control.tele(self, up_ms)
            _forget("headset.control")
        if reboot and self.hw.reset is not None:
            self.hw.reset()

    def _config_message(self, payload, up_ms):
        # A config from the companion (retained: it arrives on every connect), checked, saved
        # and applied live, one on-demand module at a time, each dropped before the next loads
        # (config, the settings validator and its messages, config again, the policy's own
        # setup): on the 96 KB heap they do not fit in it together with the running firmware.
        n = payload if isinstance(payload, int) else len(payload)  # int: skipped unread
        if n > _CONFIG_MAX:
            errs = ["config is %d bytes; a device takes at most %d" % (n, _CONFIG_MAX)]
        else:
            try:
                new, errs = _config().parse(payload)
                _forget("headset.config")
                p = new.get("policy") if isinstance(new, dict) else None
                if isinstance(p, dict) and p:  # a top-level eu_mode counts for the policy too
                    errs += _policy_problems(
                        dict(p, eu_mode=True) if new.get("eu_mode") is True else p
                    )
            except MemoryError:  # a payload odd enough to need more than the heap has left
                errs = ["not enough memory on the device to check this config"]
            _forget_config()
            gc.collect()
        if errs:
            n = len(errs) - _PROBLEMS_MAX
            reply(self, "config", False, "; ".join(errs[:_PROBLEMS_MAX]) + (
                "; and %d more" % n if n > 0 else "") + "; nothing changed", up_ms)  # fmt: skip
            return
        try:
            changed = _config().commit(self, new, up_ms)
        finally:
            _forget("headset.config")
        if changed:  # new cue-policy settings: the open conversation ends, a new policy starts
            for etype, fields in self.pipeline.finish(up_ms / 1000):
                self.emit(etype, fields, up_ms)
            gc.collect()
            self.pipeline.configure(self.cfg, self.rand)
            _forget_config()  # Policy() loaded the validator again
            reply(self, "config", True, "applied rev %d" % self.cfg["rev"], up_ms)

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
