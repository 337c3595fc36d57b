"""Code in flash, data in the heap: the headset bundle as a ROMFS image (MicroPython >= 1.25),
mounted on the real unix port with vfs.VfsRom over memory outside the counted heap
(calmcue/shared/romport.py maps the image read-only), its .mpy modules imported in place."""

from __future__ import annotations

import hashlib
import json
import subprocess

from fw_harness import Collector, run_through

from calmcue.mpy import interpreter
from calmcue.shared import romport
from firmware.core import events
from firmware.tools import bundle, heap_report

# The target: the whole headset demo in a 64K heap, the image outside it.
ROM_HEAP = "64K"

MOUNT = """
import gc, os, sys, uctypes, vfs
a, n = [int(x) for x in os.getenv("CALMCUE_ROM").split(",")]
vfs.mount(vfs.VfsRom(uctypes.bytearray_at(a, n)), "/rom")
"""

IMPORT_COST = """
import gc, sys
sys.path.insert(0, PATH)
gc.collect()
before = gc.mem_free()
from firmware.headset.main import load_code
load_code()
gc.collect()
import firmware.core.policy
print(before - gc.mem_free(), firmware.core.policy.__file__)
"""


def _mpy(cmd: list[str], script: str, tmp_path, heap: str = "256K") -> str:
    f = tmp_path / "script.py"
    f.write_text(script)
    proc = subprocess.run([*cmd, "-X", f"heapsize={heap}", str(f)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_unix_port_imports_firmware_in_place_from_the_image(host_build, host_rom, tmp_path):
    """vfs.VfsRom exists on the installed unix port, and the firmware's code imported from the
    image costs the heap much less than the same .mpy files imported from a directory: the
    bytecode and constants are used where they lie, not copied in."""
    rom = _mpy(romport.interpreter(host_rom), MOUNT + IMPORT_COST.replace("PATH", "'/rom'"),
               tmp_path).split()  # fmt: skip
    disk = _mpy(interpreter(), IMPORT_COST.replace("PATH", repr(str(host_build))), tmp_path).split()
    rom_cost, disk_cost = int(rom[0]), int(disk[0])
    print(f"heap taken by the firmware's code: {disk_cost} B from a directory, {rom_cost} B "
          f"from the ROMFS image ({host_rom.stat().st_size} B)")  # fmt: skip
    assert rom[1] == "/rom/firmware/core/policy.mpy" and disk[1].startswith(str(host_build))
    assert rom_cost < disk_cost * 0.7, (rom_cost, disk_cost)


def test_make_firmware_writes_the_image_and_its_manifest(tmp_path):
    """`make firmware` writes build/firmware.romfs and build/firmware.romfs.json beside the
    bundle: every .mpy and the model in the image (main.py stays a file: MicroPython runs
    /main.py from the writable filesystem), each with the bundle's hash, read back through
    vfs.VfsRom on the unix port."""
    manifest = bundle.build(tmp_path / "fw", march="x64")
    image, meta_path = bundle.romfs_paths(tmp_path / "fw")
    meta = json.loads(meta_path.read_text())
    assert meta == manifest["romfs"]
    data = image.read_bytes()
    assert data.startswith(bundle.ROMFS_HEADER)
    assert meta["image_size"] == len(data) and meta["image_sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["bundle_sha256"] == manifest["bundle_sha256"] and meta["mount"] == "/rom"
    assert meta["outside"] == ["main.py"] and "main.py" not in meta["files"]
    assert set(meta["files"]) == set(manifest["files"]) - {"main.py"}
    assert "firmware/headset/app.mpy" in meta["files"]
    listing = MOUNT + f"""
import hashlib, binascii
for p in {sorted(meta["files"])!r}:
    with open("/rom/" + p, "rb") as f:
        print(p, binascii.hexlify(hashlib.sha256(f.read()).digest()).decode())
print("main.py" in os.listdir("/rom"))
"""
    out = _mpy(romport.interpreter(image), listing, tmp_path).splitlines()
    assert out[-1] == "False"
    assert dict(line.split() for line in out[:-1]) == {
        p: f["sha256"] for p, f in meta["files"].items()
    }


def test_romport_refuses_what_is_not_an_image(tmp_path):
    bad = tmp_path / "not.romfs"
    bad.write_bytes(b"MPY\x00" * 8)
    proc = subprocess.run([*romport.interpreter(bad), "-c", "print(1)"], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert proc.returncode != 0 and "not a MicroPython ROMFS image" in proc.stderr


def test_demo_ten_minutes_in_64k_with_code_in_the_image(
    host_build, host_rom, headset_wav, tmp_path, mosquitto
):
    """The issue's target: 600 s of the headset demo, run from the ROMFS image mapped outside
    the heap, in -X heapsize=64K: the same free heap at every minute from 1 to 10, every event
    at the broker, cues on the LED and motor. The counted heap is the whole GC heap (64 KiB):
    the image alone is bigger than the room the firmware leaves free, so it cannot be in it."""
    collector = Collector(mosquitto.port)
    try:
        flash = tmp_path / "flash"
        flash.mkdir()
        minutes = ",".join(str(60 * m) for m in range(1, 11))
        lines = run_through(host_build, flash, headset_wav, mosquitto.port, "--seconds", "600",
                            "--heap-at", minutes, "--trace", heap=ROM_HEAP, rom=host_rom)  # fmt: skip
        marks = [x["heap"] for x in lines if "heap" in x]
        heap = {int(x["t_s"]): x["free"] for x in marks}
        done = next(x["done"] for x in lines if "done" in x)
        print(f"64K heap from the image ({host_rom.stat().st_size} B): free per minute {heap}, "
              f"used {marks[-1]['alloc']}, lowest free {done['heap_min']}")  # fmt: skip
        assert sorted(heap) == [60 * m for m in range(1, 11)]
        assert len(set(heap.values())) == 1, heap
        assert all(x["alloc"] + x["free"] <= 64 * 1024 for x in marks)
        assert host_rom.stat().st_size > heap[60]  # the image is not in what is free either
        assert done["heap_min"] > 4096 and done["t_ms"] >= 600_000

        queued = [x["evt"] for x in lines if "evt" in x]
        cues = [e for e in queued if e["type"] == "cue"]
        assert cues
        led = [x for x in lines if x.get("out") == "led48" and x["value"] != [0, 0, 0]]
        motor = [x for x in lines if x.get("out") == "pwm7" and x["value"] > 0]
        assert len(led) >= len(cues) and motor
        assert done["queue"] == 0 and done["sent"] == len(queued)
        collector.wait_for(lambda m: m[0].endswith("/evt/" + queued[-1]["type"])
                           and json.loads(m[1])["seq"] == queued[-1]["seq"])  # fmt: skip
        got = collector.events()
        assert [e["seq"] for e in got] == list(range(len(queued)))
        assert all(events.problems(e) == [] for e in got)
        assert [e["cue"] for e in got if e["type"] == "cue"] == [c["fields"]["cue"] for c in cues]
    finally:
        collector.close()


# The qstr pool grows by doubling: pools of 20, 40, 80, 160 and 320 names hold 620; the 621st
# allocates a pool of 640 names at once, about 7 KB that the 64K demo does not have
# (docs/firmware.md, Memory). The demo interns a few names at run time beyond its modules'
# (597 against 593 when last measured), so the modules keep 20 names of room.
QSTR_ROOM = 620
QSTR_RUNTIME = 20


def test_the_firmware_names_fit_the_qstr_pools_of_the_64k_demo(host_build, host_rom):
    rows = heap_report.measure(host_build, "400K", host_rom)  # every module, on-demand ones too
    total = int(rows[-1]["total_qstrs"])
    print(f"qstrs with every module loaded from the image: {total} of {QSTR_ROOM}, "
          f"{sum(bool(r['new_pool']) for r in rows)} pools added after start")  # fmt: skip
    assert rows[-1]["module"] == heap_report.ON_DEMAND[-1]
    assert total <= QSTR_ROOM - QSTR_RUNTIME, (
        f"{total} qstrs: a new global, attribute or short string name on the device brings the "
        f"{QSTR_ROOM + 1}st closer, which costs a 7 KB pool; rename or drop names first"
    )
