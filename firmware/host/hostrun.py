# The host runner's body; firmware/host/runner.py sets up the paths and calls main(). The headset
# firmware on the MicroPython unix port, faster than real time. Fakes only the hardware
# (firmware/host/machine.py); MQTT goes over real sockets to a real broker. Prints one JSON line
# per happening. Host-only code costs heap the device does not spend, so this is one function
# (closures for what the loop calls); the boot is firmware/host/hostboot.py, freed once done.
#
#   micropython -X heapsize=96K firmware/host/runner.py --flash DIR --wav FILE [options]
#     --seconds S        audio to play (the WAV loops when S is longer); default: the WAV once
#     --site S --device D --mqtt-port P [--mqtt-host H]   provision DIR/device.json if missing
#     --trace            print every LED/motor change
#     --heap-at 60,600   print free heap at these audio seconds: right after the hop that ends
#                        there, the C stack scrubbed, after gc.collect()
#     --build DIR        run the compiled modules in DIR (firmware.tools.bundle.compile_host),
#                        as the device does, instead of compiling the sources into the heap
#     --rom              run from the ROMFS image of such a build that calmcue.shared.romport mapped
#                        outside the heap (python -m calmcue.shared.romport IMAGE -X heapsize=64K
#                        runner.py --rom ...): mounted at /rom, its code executed in place
#     --asyncio S        run the device's asyncio main loop (firmware.headset.app.run) for S seconds of
#                        real time, the fake I2S paced at 16 kHz
#     --mic-fail A,B     with --asyncio: the I2S read raises OSError from A to B s
#     --control          read commands from stdin instead of playing straight through:
#                          audio S | press MS | radio up|down | state | quit
#
# Lines: {"boot":..}, {"evt":{..}} when an event is queued, {"out":..} with --trace, {"log":..},
# {"heap":..}, {"state":..}, {"done":..}. Time in the firmware is audio time (samples / 16 kHz).
import gc
import json
import sys

import machine

args = None  # the options: argv for hostboot, then what it parsed


def out(v, key="log"):
    print(json.dumps({key: v}))


def _scrub(n):
    # Overwrite the C stack with fresh frames: the unix port's collector scans the stack
    # conservatively, and stale pointers left there would keep dead objects counted as used.
    return 0 if n == 0 else _scrub(n - 1) + 0


def main(argv):
    global args
    args = argv
    import hostboot as b

    root, model = b.root, b.model
    b = None
    del sys.modules["hostboot"]
    gc.collect()
    from firmware.headset import main as hw
    from firmware.headset.app import Device

    i2s, h = hw.hardware()
    gc.collect()
    dev = Device(h, root, log=out, model=model)
    model = None
    hw.start_watchdog(h)
    send = dev.emit

    def emit(etype, fields, up_ms):  # named as what it wraps: no new qstr
        send(etype, fields, up_ms)
        out({"type": etype, "boot": dev.boot, "seq": dev.stamper.seq - 1, "up_ms": up_ms,
             "fields": fields}, "evt")

    dev.emit = emit
    gc.collect()
    print(json.dumps({"boot": dev.boot, "config_error": dev.config_error,
                      "queued": len(dev.queue), "heap_free": gc.mem_free()}))
    o = args
    marks = o["heap-at"]
    rate = i2s.rate
    low = None

    def audio(s):  # s seconds of audio (None: the WAV once), each hop stepped as the device does
        nonlocal low
        end = None if s is None else i2s.count + int(s * rate)
        while end is None or i2s.count < end:
            t0 = i2s.count * 1000 // rate
            n = h.mic.read()
            if not n:
                return
            t = i2s.count * 1000 // rate
            dev.audio(n, t)
            for sub in range(t0 + 20, t, 20):  # the 20 ms outputs/button task of the device
                dev.tick(sub)
            dev.tick(t)
            dev.network(t)
            if i2s.count % rate < n:  # about once per audio second
                gc.collect()
                low = min(low or gc.mem_free(), gc.mem_free())
            for m in marks:  # ms
                if t0 < m <= t:
                    _scrub(40)
                    gc.collect()
                    out({"t_s": m / 1000, "free": gc.mem_free(), "alloc": gc.mem_alloc()}, "heap")

    c = ["run"]
    while c[0] != "quit":
        if "control" in o:
            c = (sys.stdin.readline() or "quit").split() + [""]
            if c[0] == "audio":
                audio(float(c[1]))
            elif c[0] == "press":  # the test's finger on the button for c[1] ms
                h.button.pin.pos = 0
                audio(float(c[1]) / 1000)
                h.button.pin.pos = 1
                audio(0.25)
            elif c[0] == "radio":
                machine.radio = c[1] == "up"
                if not machine.radio:
                    h.wlan.pos = False  # the access point vanished: the join is lost
            elif c[0] != "state" and c[0] != "quit":
                out("unknown command " + c[0], "error")
        else:
            c = ["quit"]
            if "asyncio" in o:
                # The device's own main loop (asyncio audio, outputs and network tasks on real
                # time), the I2S paced at 16 kHz, stopped after that many seconds.
                import asyncio

                from firmware.headset.app import run

                try:
                    asyncio.run(asyncio.wait_for(run(dev, i2s), float(o["asyncio"])))
                except asyncio.TimeoutError:  # noqa: UP041 (MicroPython: not the builtin)
                    pass
            else:
                audio(float(o["seconds"]) if "seconds" in o else None)
                # Let the network drain what the audio produced (one event per broker round
                # trip: the network step never waits for the PUBACK, so wait here).
                for _ in range(1000):
                    if not len(dev.queue) or not dev.link.up:
                        break
                    __import__("time").sleep_ms(2)
                    dev.network(i2s.count * 1000 // rate)
        out({"t_ms": i2s.count * 1000 // rate, "queue": len(dev.queue), "sent": dev.sent,
             "mqtt": dev.link.up, "connects": dev.link.connects, "seq": dev.stamper.seq,
             "boot": dev.boot, "muted": dev.muted, "heap_min": low, "wdt_feeds": h.wdt.count,
             "dropped": dev.queue.dropped, "ts_known": dev.unix_at_boot is not None,
             "lost_ms": h.lost_ms, "late_ms": h.late_ms, "net_max_us": h.net_max_us,
             "mic_ok": h.ok, "i2s_lost": i2s.lost, "ota_loaded": "firmware.headset.ota" in sys.modules,
             "outputs": machine.state}, "state" if "control" in o else "done")
