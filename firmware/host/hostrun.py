# The host runner's body; firmware/host/runner.py sets up the paths and calls main(). The headset
# firmware on the MicroPython unix port, faster than real time. Fakes only the hardware (firmware/host/machine.py, network.py, neopixel.py, ntptime.py);
# MQTT goes over real sockets to a real broker. Prints one JSON line per happening.
#
#   micropython -X heapsize=96K firmware/host/runner.py --flash DIR --wav FILE [options]
#     --seconds S        audio to play (the WAV loops when S is longer); default: the WAV once
#     --site S --device D --mqtt-port P [--mqtt-host H]   provision DIR/device.json if missing
#     --trace            print every LED/motor change
#     --heap-at 60,600   print free heap (after gc.collect) at these audio seconds
#     --build DIR        run the compiled modules in DIR (firmware.tools.bundle.compile_host),
#                        as the device does, instead of compiling the sources into the heap
#     --asyncio S        run the device's asyncio main loop (firmware.app.run) for S seconds of
#                        real time, the fake I2S paced at 16 kHz
#     --control          read commands from stdin instead of playing straight through:
#                          audio S | press MS | radio up|down | state | quit
#
# Lines: {"boot":..}, {"evt":{..}} when an event is queued, {"out":..} with --trace,
# {"heap":..}, {"state":..}, {"done":..}. Time in the firmware is audio time (samples / 16 kHz).
import gc
import json
import sys

import machine
import network

from firmware.mic import RATE


def _args(argv):
    opts = {"seconds": None, "site": "demo", "device": "headset-1", "mqtt-host": "127.0.0.1",
            "mqtt-port": None, "trace": False, "control": False, "heap-at": "", "flash": None,
            "wav": None, "build": None, "asyncio": None}
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("--") or a[2:] not in opts:
            raise SystemExit("runner: unknown argument %s" % a)
        key = a[2:]
        if isinstance(opts[key], bool):
            opts[key] = True
            i += 1
            continue
        opts[key] = argv[i + 1]
        i += 2
    if not opts["flash"] or not opts["wav"]:
        raise SystemExit("runner: --flash DIR and --wav FILE are required")
    return opts


def _out(obj):
    sys.stdout.write(json.dumps(obj))
    sys.stdout.write("\n")


def _provision(flash, o):
    path = flash + "device.json"
    try:
        open(path).close()
        return
    except OSError:
        pass
    if o["mqtt-port"] is None:
        raise SystemExit("runner: %s missing; give --mqtt-port (and --site/--device)" % path)
    ident = {
        "site": o["site"], "device": o["device"],
        "wifi": {"ssid": "store-wifi", "password": "not-a-real-one"},
        "mqtt": {"host": o["mqtt-host"], "port": int(o["mqtt-port"]), "keepalive": 60},
    }
    with open(path, "w") as f:
        f.write(json.dumps(ident))


def _scrub(n):
    # Overwrite the C stack with fresh frames: the unix port's collector scans the stack
    # conservatively, and stale pointers left there would keep dead objects counted as used.
    return 0 if n == 0 else _scrub(n - 1) + 0


# Leaves first, one collection after each: import garbage never gets trapped between modules.
_IMPORT_ORDER = (
    "firmware.events", "firmware.store", "umqtt.simple", "firmware.net",
    "firmware.outputs", "firmware.cue_settings", "firmware.features", "firmware.policy",
    "firmware.attribution", "firmware.pipeline", "firmware.app",
)


class Runner:
    def __init__(self, o):
        from firmware import main as hw_main

        flash = o["flash"].rstrip("/") + "/"
        _provision(flash, o)
        loop = o["seconds"] is not None or o["control"]
        machine.set_i2s_source(o["wav"], loop, o["asyncio"] is not None)
        self.samples = 0
        machine.now_ms = self.up_ms
        if o["trace"]:
            machine.trace = self._trace
        # As firmware/main.py does on the device: the model's weights first (the biggest
        # blocks, while the heap is in one piece), then all code, then the buffers, each step
        # followed by a collection, so long-lived objects are packed.
        from firmware.modelfile import load_model

        model = load_model(flash)
        gc.collect()
        for name in _IMPORT_ORDER:
            __import__(name)
            gc.collect()
        from firmware.app import Device

        self.i2s, hw = hw_main.hardware()
        gc.collect()
        self.dev = Device(hw, flash, log=self._log, model=model)
        hw_main.start_watchdog(hw)
        emit = self.dev.emit

        def emit_and_print(etype, fields, up_ms):
            emit(etype, fields, up_ms)
            _out({"evt": {"type": etype, "boot": self.dev.boot, "seq": self.dev.stamper.seq - 1, "up_ms": up_ms,
                          "fields": fields}})

        self.dev.emit = emit_and_print
        self.heap_min = None
        _out({"boot": self.dev.boot, "config_error": self.dev.config_error,
              "queued": len(self.dev.queue), "heap_free": gc.mem_free()})

    def up_ms(self):
        return self.samples * 1000 // RATE

    def _trace(self, kind, name, value):
        _out({"out": name, "value": value, "t_ms": self.up_ms()})

    def _log(self, msg):
        _out({"log": msg, "t_ms": self.up_ms()})

    def hop(self):
        """One hop of audio through the firmware, then outputs/button and the network."""
        dev = self.dev
        n = dev.hw.mic.read()
        if n == 0:
            return False
        before = self.up_ms()
        self.samples += n
        t = self.up_ms()
        dev.audio(n, t)
        for sub in range(before + 20, t, 20):  # the 20 ms outputs/button task of the device
            dev.tick(sub)
        dev.tick(t)
        dev.network(t)
        if self.samples % RATE < n:  # about once per audio second
            gc.collect()
            free = gc.mem_free()
            if self.heap_min is None or free < self.heap_min:
                self.heap_min = free
        return True

    def play(self, seconds, marks=()):
        end = self.samples + int(seconds * RATE) if seconds is not None else None
        while end is None or self.samples < end:
            if not self.hop():
                break
            for m in marks:
                if (self.samples - len(self.dev.hw.mic.samples)) < m * RATE <= self.samples:
                    _scrub(40)
                    gc.collect()
                    _out({"heap": {"t_s": m, "free": gc.mem_free(), "alloc": gc.mem_alloc()}})

    def run_device_loop(self, seconds):
        """The device's own main loop (firmware.app.run: asyncio audio, outputs and network
        tasks on real time), the I2S paced at 16 kHz, stopped after `seconds`."""
        import asyncio

        from firmware.app import run

        try:
            asyncio.run(asyncio.wait_for(run(self.dev, self.i2s), seconds))
        except asyncio.TimeoutError:  # noqa: UP041 (MicroPython: not the builtin)
            pass
        self.samples = self.i2s.samples_read

    def state(self):
        d = self.dev
        return {"t_ms": self.up_ms(), "queue": len(d.queue), "sent": d.sent, "mqtt": d.link.up,
                "connects": d.link.connects, "seq": d.stamper.seq, "boot": d.boot,
                "muted": d.muted, "heap_min": self.heap_min, "led": machine.state.get("led48"),
                "outputs": machine.counts, "wdt_feeds": machine.WDT.feeds,
                "dropped": d.queue.dropped, "ts_known": d.unix_at_boot is not None,
                "wifi_connects": network.connect_calls[0]}

    def control(self):
        while True:
            line = sys.stdin.readline()
            if not line:
                return
            cmd = line.split()
            if not cmd:
                continue
            if cmd[0] == "audio":
                self.play(float(cmd[1]))
            elif cmd[0] == "press":
                machine.press(0, True)
                self.play(float(cmd[1]) / 1000)
                machine.press(0, False)
                self.play(0.25)
            elif cmd[0] == "radio":
                network.radio(cmd[1] == "up")
            elif cmd[0] == "state":
                pass
            elif cmd[0] == "quit":
                _out({"state": self.state()})
                return
            else:
                _out({"error": "unknown command %s" % cmd[0]})
            _out({"state": self.state()})


def main(argv):
    o = _args(argv)
    r = Runner(o)
    if o["control"]:
        r.control()
        return
    if o["asyncio"] is not None:
        r.run_device_loop(float(o["asyncio"]))
        _out({"done": r.state()})
        return
    marks = [float(x) for x in o["heap-at"].split(",") if x]
    r.play(float(o["seconds"]) if o["seconds"] is not None else None, marks)
    # Let the network drain what the audio produced (audio time keeps running: silence of the
    # WAV's own end is not needed, the queue is sent a few events per step).
    for _ in range(200):
        if not len(r.dev.queue) or not r.dev.link.up:
            break
        r.dev.network(r.up_ms())
    _out({"done": r.state()})

