# calmcue A/B loader. Provisioning installs this file as the device's /boot.py; over-the-air
# updates never replace it, so a bad bundle can always be rolled back.
#
# Two bundle slots, a/ and b/, and a pointer file ota.json:
#   {"active": "a", "previous": "b", "state": "good" | "trial" | "rolled_back", "boots": n, ...}
# An update is written into the inactive slot, then the pointer is switched with state "trial".
# The new bundle must call firmware.headset.ota.confirm() once it is healthy, within its time limit;
# if the device boots a second time while still on trial (it crashed, hung and was reset by the
# watchdog, or the health deadline reset it), this loader switches back to the previous slot.
#
# Safe mode: a confirmed bundle can still crash-loop later (a config, a flash state, a network
# it never met on trial). Every hard boot counts in "starts"; the firmware sets it back to 0
# once it has run STABLE minutes (firmware/headset/app.py). After SAFE_AFTER starts in a row without
# that, this loader rolls back to the previous bundle if there is one, or else starts no
# firmware at all: the REPL stays free for `calmcue device provision` over USB. Soft resets
# (the REPL's Ctrl-D, a bench tool) count for nothing.
#
# Code in flash (MicroPython >= 1.25): a bundle may carry its modules as a ROMFS image. The
# board's romfs partition (vfs.rom_ioctl(2, 0)) holds two images, slot a's in its first half
# and slot b's in its second, and <slot>/romfs.json names the slot's image ({"size", "sha256"}),
# written only once the image on flash has been checked. This loader mounts the active slot's
# image at /rom, first on sys.path, after checking it against that record (an image that does
# not match is treated as a failed bundle). The port mounts the whole partition at /rom before
# boot.py runs; that mount is replaced. An update writes only the inactive half, so a power
# cut anywhere in it leaves the active slot's image as it was.
import binascii
import hashlib
import json
import os
import sys

POINTER = "ota.json"
IMAGE_RECORD = "romfs.json"  # in each slot folder
ROM = "/rom"
# seconds a new bundle has to confirm itself (firmware/headset/app.py confirms after its first telemetry)
HEALTH_S = 180
SAFE_AFTER = 5  # hard boots in a row without 5 minutes of running (firmware/headset/app.py _STABLE_MS)


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


def _soft_reset():
    # A soft reset (Ctrl-D at the REPL, a bench tool entering the raw REPL) runs boot.py again
    # without the bundle having crashed: it must not count as a second trial boot, which would
    # roll an update on trial back.
    try:
        import machine

        return machine.reset_cause() == machine.SOFT_RESET
    except (ImportError, AttributeError):
        return False


def select_slot():
    p = load_pointer()
    if p.get("state") == "trial" and not _soft_reset():
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
    elif not _soft_reset():
        p["starts"] = p.get("starts", 0) + 1
        if p["starts"] > SAFE_AFTER:
            if p.get("previous"):  # the bundle before this one ran: go back to it
                p["failed"] = p["active"]
                p["failed_version"] = p.get("version")
                p["active"] = p["previous"]
                p["version"] = p.get("previous_version")
                p["previous"] = None  # no way back to the failed one, no ping-pong
                p["state"] = "rolled_back"
                p["reported"] = False
                p["starts"] = 1
            else:
                save_pointer(p)
                print("calmcue: safe mode, %d starts without 5 minutes of running; the firmware "
                      "is not started. Reprovision over USB (calmcue device provision)"
                      % (p["starts"] - 1))
                return None
        save_pointer(p)
    return p["active"]


def _overdue(timer):
    # Still on trial when the time is up: reset, and the next boot rolls back. A hang is the
    # firmware's watchdog's job; this covers a bundle that runs but never gets healthy.
    if load_pointer().get("state") == "trial":
        import machine

        machine.reset()


def arm_health_deadline(p, timer_cls=None):
    """On a trial boot, a one-shot timer that resets the device if it is not confirmed in time."""
    if p.get("state") != "trial":
        return None
    try:
        if timer_cls is None:
            from machine import Timer as timer_cls
        t = timer_cls(0)
        t.init(mode=timer_cls.ONE_SHOT, period=int(p.get("health_s", HEALTH_S) * 1000),
               callback=_overdue)
        return t
    except (ImportError, AttributeError, ValueError, OSError):
        return None  # no hardware timer (unix port): the watchdog and the next boot still act


def rom_segment():
    """The board's romfs partition, or None: MicroPython before 1.25, a build without ROMFS, or
    a partition table without a romfs partition (then bundles run from their folders)."""
    import vfs

    ioctl = getattr(vfs, "rom_ioctl", None)
    if ioctl is None:
        try:  # the unix port has no flash: the host's fake partition (firmware/host/romflash.py)
            from romflash import rom_ioctl as ioctl
        except ImportError:
            return None
    if ioctl(1) < 1:
        return None
    seg = ioctl(2, 0)
    return None if isinstance(seg, int) else seg


def image_offset(seg, slot):
    """Where `slot`'s image starts in the partition: a at 0, b at the first erase block of the
    second half. Each half holds one image (firmware/headset/ota.py and provisioning write there)."""
    return 0 if slot == "a" else seg.ioctl(4, 0) // 2 * seg.ioctl(5, 0)


def _unmount():
    import vfs

    try:
        vfs.umount(ROM)
    except OSError:
        pass
    while ROM in sys.path:
        sys.path.remove(ROM)


def mount_image(slot):
    """Mount `slot`'s image at /rom, first on sys.path. True when mounted, None for a bundle
    without an image (run from the folder), False when the image on flash is not the one the
    slot's record names (nothing mounted)."""
    try:
        with open(slot + "/" + IMAGE_RECORD) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        rec = None
    seg = rom_segment()
    if seg is not None:
        _unmount()  # the port's own mount of the whole partition (slot a's image, or stale)
    if rec is None:
        return None
    if seg is None:
        return False
    import vfs

    try:
        start = image_offset(seg, slot)
        view = memoryview(seg)[start:start + rec["size"]]
        if binascii.hexlify(hashlib.sha256(view).digest()).decode() != rec["sha256"]:
            return False
    except (KeyError, TypeError, ValueError):  # a record that names no image
        return False
    vfs.mount(vfs.VfsRom(view), ROM)
    sys.path.insert(0, ROM)
    return True


def boot():
    """Choose the slot, mount its image, put both on sys.path. An image that does not match its
    record counts as a failed bundle: back to the previous slot when it has a good image or no
    image at all, else no firmware (safe mode)."""
    slot = select_slot()
    if slot is None:
        return None
    if mount_image(slot) is False:
        p = load_pointer()
        back = p.get("previous")
        print("calmcue: the image of slot %s does not match its record" % slot)
        if not back or mount_image(back) is False:
            return None
        p["failed"] = slot
        p["failed_version"] = p.get("version")
        p["active"] = back
        p["version"] = p.get("previous_version")
        p["previous"] = None
        p["state"] = "rolled_back"
        p["reported"] = False
        save_pointer(p)
        slot = back
    if slot not in sys.path:
        sys.path.insert(1 if sys.path[:1] == [ROM] else 0, slot)
    return slot


slot = boot()
_deadline = arm_health_deadline(load_pointer())
# boot.py's globals stay in the heap while the firmware runs (main.py runs in the same globals):
# keep only what the health deadline's callback needs.
for _name in ("select_slot", "boot", "mount_image", "_unmount", "rom_segment", "image_offset",
              "arm_health_deadline", "_soft_reset", "save_pointer"):
    globals().pop(_name)
del _name
