# calmcue A/B loader. Provisioning installs this file as the device's /boot.py; over-the-air
# updates never replace it, so a bad bundle can always be rolled back.
#
# Two bundle slots, a/ and b/, and a pointer file ota.json:
#   {"active": "a", "previous": "b", "state": "good" | "trial" | "rolled_back", "boots": n, ...}
# An update is written into the inactive slot, then the pointer is switched with state "trial".
# The new bundle must call firmware.ota.confirm() once it is healthy, within its time limit;
# if the device boots a second time while still on trial (it crashed, hung and was reset by the
# watchdog, or the health deadline reset it), this loader switches back to the previous slot.
import json
import os
import sys

POINTER = "ota.json"


def load_pointer():
    try:
        with open(POINTER) as f:
            p = json.load(f)
        if p.get("active") in ("a", "b"):
            return p
    except (OSError, ValueError):
        pass
    return {"active": "a", "state": "good", "boots": 0}


def save_pointer(p):
    # write a new file, then rename over the old one: a power cut leaves one or the other
    with open(POINTER + ".tmp", "w") as f:
        json.dump(p, f)
    os.rename(POINTER + ".tmp", POINTER)


def select_slot():
    p = load_pointer()
    if p.get("state") == "trial":
        if p.get("boots", 0) >= 1:
            p["failed"] = p["active"]
            p["failed_version"] = p.get("version")
            p["active"] = p.get("previous") or ("b" if p["active"] == "a" else "a")
            p["version"] = p.get("previous_version")
            p["state"] = "rolled_back"
            p["reported"] = False
        else:
            p["boots"] = p.get("boots", 0) + 1
        save_pointer(p)
    return p["active"]


slot = select_slot()
if slot not in sys.path:
    sys.path.insert(0, slot)
