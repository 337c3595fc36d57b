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

argv = hostrun.args
args = {"site": "demo", "device": "headset-1", "mqtt-host": "127.0.0.1", "heap-at": ""}
while argv:
    key = argv.pop(0)[2:]
    if "|%s|" % key not in "|seconds|heap-at|asyncio|control|trace|rom|flash|wav|build|site|device|mqtt-host|mqtt-port|mic-fail|":
        raise SystemExit("runner: unknown argument --" + key)
    args[key] = key in ("control", "trace", "rom") or argv.pop(0)
root = args["flash"].rstrip("/") + "/"  # KeyError: --flash DIR is required (and --wav FILE)
try:
    open(root + "device.json").close()
except OSError:  # provision it (KeyError: --mqtt-port is needed for that)
    with open(root + "device.json", "w") as f:
        json.dump({"site": args["site"], "device": args["device"],
                   "wifi": {"ssid": "store-wifi", "password": "not-a-real-one"},
                   "mqtt": {"host": args["mqtt-host"], "port": int(args["mqtt-port"]),
                            "keepalive": 60}}, f)
if "build" in args:
    # Import the firmware from the build folder as the current directory: each module's file
    # name is a qstr for the whole run, and a short "firmware/headset/app.mpy" (as on the device) costs
    # far less than the tests' long temporary path (~1 KB of qstr text over the modules).
    path = os.getcwd() + "/"
    for key in ("flash", "wav"):
        if args[key][0] != "/":
            args[key] = path + args[key]
    root = args["flash"].rstrip("/") + "/"
    os.chdir(args["build"])
    sys.path.remove(args["build"])
    sys.path.insert(0, ".")
machine.wav = [args["wav"], "seconds" in args or "control" in args, "asyncio" in args]
machine.trace = "trace" in args
if "mic-fail" in args:  # --mic-fail A,B: the I2S read fails from A to B s of real time
    machine.fail = [int(float(x) * 1000) for x in args["mic-fail"].split(",")]
# As firmware/headset/main.py does on the device: the model's weights first (the biggest blocks, while
# the heap is in one piece), then all code, then the buffers, each step followed by a
# collection, so long-lived objects are packed.
from firmware.headset.modelfile import load_model  # noqa: E402

model = load_model(root)
gc.collect()
from firmware.headset.main import load_code  # noqa: E402  (the device's own boot order)

load_code()
from firmware.headset.app import release  # noqa: E402

release("firmware.headset.modelfile")  # as firmware/headset/main.py does: needed once per boot
# --heap-at seconds as ms of audio time (ints: no float objects held for the run).
args["heap-at"] = [int(float(x) * 1000) for x in args["heap-at"].split(",") if x]
hostrun.args = args
