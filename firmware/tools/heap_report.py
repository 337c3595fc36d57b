"""Where the headset firmware's heap goes on the MicroPython unix port: each module's import
cost in the device's boot order (bytes after a collection, the qstrs it adds and the qstr-pool
bytes they take), then the config checks, loaded only at boot and for a config message, and
the totals.

    python -m firmware.tools.heap_report [--build DIR] [--heap 400K] [--rom]

--rom: the same from the build's ROMFS image, mapped outside the heap (calmcue/shared/romport.py)
as a device's flash: what each module then leaves in the heap (its globals, the objects its
code makes at import, the qstrs) with its bytecode and constant strings in the image.

The qstr pool grows by doubling (pools of 160, 320, 640 entries on this build), so the module
that crosses a step pays for the whole new pool; the report says where that happens.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from calmcue.shared.mpy import interpreter

REPO = Path(__file__).resolve().parents[2]

# The device's boot order (firmware/headset/main.py load_code(), which the host runner's boot uses too):
# the fake hardware first (built into the device's firmware image), the weights' loader, the
# code leaves first, then the runner itself. Then the config checks (firmware/headset/app.py
# _CHECKS), loaded at boot and for a config message and released after: their cost on top of
# everything else. (The OTA client, loaded for an update, and TLS, for mqtts://, are not in it.)
HOST_ONLY = ("machine", "hostrun")
ON_DEMAND = ("firmware.headset.config", "firmware.core.cue_settings")


def boot_order() -> list[str]:
    src = (REPO / "firmware" / "headset" / "main.py").read_text()
    body = re.search(r"def load_code\(\):.*?for name in \((.*?)\):", src, re.S)
    if body is None:
        raise SystemExit("heap_report: firmware/headset/main.py has no load_code() import list")
    order = re.findall(r'"([\w.]+)"', body.group(1))
    return ["machine", "firmware.headset.modelfile", *order, "firmware.headset.main", "hostrun"]


_SCRIPT = """
import sys, gc, micropython
%(mount)s
sys.path.insert(0, %(code)r); sys.path.insert(0, %(build)r + "/host")
gc.collect(); print("MOD (interpreter)", gc.mem_alloc()); micropython.qstr_info()
for name in %(order)r:
    __import__(name); gc.collect(); print("MOD", name, gc.mem_alloc()); micropython.qstr_info()
"""

_QSTR = re.compile(r"n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)")


_MOUNT = """
import os, uctypes, vfs
a, n = [int(x) for x in os.getenv("CALMCUE_ROM").split(",")]
vfs.mount(vfs.VfsRom(uctypes.bytearray_at(a, n)), "/rom")
"""


def measure(
    build: Path, heap: str = "400K", rom: Path | None = None
) -> list[dict[str, int | str | bool]]:
    """One row per module: bytes, qstrs and qstr-pool bytes its import added, whether it
    allocated a new qstr pool, and the running totals. With `rom` (the build's ROMFS image),
    the firmware is imported from the image mounted outside the heap."""
    from calmcue.shared import romport

    order = boot_order() + list(ON_DEMAND)
    script = _SCRIPT % {"build": str(build), "order": order, "mount": _MOUNT if rom else "",
                        "code": "/rom" if rom else str(build)}  # fmt: skip
    start = romport.interpreter(rom) if rom else interpreter()
    proc = subprocess.run(
        [*start, "-X", f"heapsize={heap}", "-c", script],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"heap_report: import failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    rows: list[dict[str, int | str | bool]] = []
    lines = proc.stdout.splitlines()
    prev = (0, 0, 0, 0)  # alloc, pools, qstrs, qstr bytes
    for i, line in enumerate(lines):
        if not line.startswith("MOD "):
            continue
        q = _QSTR.search(lines[i + 1])
        if q is None:
            raise SystemExit(f"heap_report: unexpected qstr_info output: {lines[i + 1]!r}")
        cur = (int(line.split()[-1]), int(q.group(1)), int(q.group(2)), int(q.group(4)))
        rows.append({
            "module": line.split()[1],
            "bytes": cur[0] - prev[0],
            "qstrs": cur[2] - prev[2],
            "qstr_bytes": cur[3] - prev[3],
            "new_pool": bool(rows) and cur[1] > prev[1],
            "total_qstrs": cur[2],
            "alloc": cur[0],
        })  # fmt: skip
        prev = cur
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", type=Path, default=None,
                    help="host build to measure (default: var/fw-host, compiled afresh)")  # fmt: skip
    ap.add_argument("--heap", default="400K")
    ap.add_argument("--rom", action="store_true",
                    help="import from the build's ROMFS image, mapped outside the heap")  # fmt: skip
    args = ap.parse_args(argv)
    from firmware.tools.bundle import build_romfs, compile_host

    if args.build is None:  # the sources as they are now, not a build left from older ones
        args.build = REPO / "var" / "fw-host"
        shutil.rmtree(args.build, ignore_errors=True)
        compile_host(args.build)
    rom = build_romfs(args.build, args.build.with_suffix(".romfs")) if args.rom else None
    if rom is not None:
        print(f"from the ROMFS image {rom} ({rom.stat().st_size} B), outside the heap")
    rows = measure(args.build, args.heap, rom)
    print(f"{'module':27} {'bytes':>7} {'qstrs':>6} {'qstr B':>7} {'rest':>7} {'all qstrs':>9}")
    host = resident = 0
    for r in rows:
        if r["module"] == ON_DEMAND[0]:
            resident = int(rows[rows.index(r) - 1]["alloc"])
            print("-- loaded only at boot and for a config message, then released:")
        step = "  <- new qstr pool" if r["new_pool"] else ""
        print(
            f"{r['module']:27} {r['bytes']:7d} {r['qstrs']:6d} {r['qstr_bytes']:7d} "
            f"{int(r['bytes']) - int(r['qstr_bytes']):7d} {r['total_qstrs']:9d}{step}"
        )
        if r["module"] in HOST_ONLY:
            host += int(r["bytes"])
    print(
        f"resident code: {resident} B in use ({host} B of it the host-only fakes and runner); "
        f"with the config checks loaded too: {rows[-1]['alloc']} B, "
        f"{rows[-1]['total_qstrs']} qstrs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
