# The host runner's boot (firmware/host/hostrun.py imports it, takes what it made and forgets
# it): options, provisioning, the model and the firmware's code. All of it is module top-level
# code, which MicroPython frees once the import is done, so none of this bytecode stays in the
# heap the firmware runs in (the device has no such code at all); hostrun builds the hardware
# and the Device after that, so it is not in the heap at the boot's peak either.
import gc
import json
import os
import sys

import hostrun
import machine

argv = hostrun.o
o = {"site": "demo", "device": "headset-1", "mqtt-host": "127.0.0.1", "heap-at": ""}
while argv:
    k = argv.pop(0)[2:]
    if "|%s|" % k not in "|seconds|heap-at|asyncio|control|trace|flash|wav|build|site|device|mqtt-host|mqtt-port|":
        raise SystemExit("runner: unknown argument --" + k)
    o[k] = k in ("control", "trace") or argv.pop(0)
flash = o["flash"].rstrip("/") + "/"  # KeyError: --flash DIR is required (and --wav FILE)
try:
    open(flash + "device.json").close()
except OSError:  # provision it (KeyError: --mqtt-port is needed for that)
    with open(flash + "device.json", "w") as f:
        json.dump({"site": o["site"], "device": o["device"],
                   "wifi": {"ssid": "store-wifi", "password": "not-a-real-one"},
                   "mqtt": {"host": o["mqtt-host"], "port": int(o["mqtt-port"]),
                            "keepalive": 60}}, f)
if "build" in o:
    # Import the firmware from the build folder as the current directory: each module's file
    # name is a qstr for the whole run, and a short "firmware/app.mpy" (as on the device) costs
    # far less than the tests' long temporary path (~1 KB of qstr text over the modules).
    d = os.getcwd() + "/"
    for k in ("flash", "wav"):
        if o[k][0] != "/":
            o[k] = d + o[k]
    flash = o["flash"].rstrip("/") + "/"
    os.chdir(o["build"])
    sys.path.remove(o["build"])
    sys.path.insert(0, ".")
machine.wav = [o["wav"], "seconds" in o or "control" in o, "asyncio" in o]
machine.trace = "trace" in o
# As firmware/main.py does on the device: the model's weights first (the biggest blocks, while
# the heap is in one piece), then all code, then the buffers, each step followed by a
# collection, so long-lived objects are packed.
from firmware.modelfile import load_model  # noqa: E402

model = load_model(flash)
gc.collect()
for k in hostrun._IMPORT_ORDER:
    __import__(k)
    gc.collect()
del hostrun._IMPORT_ORDER
# --heap-at seconds as ms of audio time (ints: no float objects held for the run).
o["heap-at"] = [int(float(x) * 1000) for x in o["heap-at"].split(",") if x]
hostrun.o = o
