"""Where the headset firmware's heap goes on the MicroPython unix port: each module's import
cost in boot order (bytes after a collection, the qstrs it adds and the qstr-pool bytes they
take), then the totals.

    python -m firmware.tools.heap_report [--build DIR] [--heap 400K]

The qstr pool grows by doubling (pools of 160, 320, 640 entries on this build), so the module
that crosses a step pays for the whole new pool; the report says where that happens.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from calmcue.mpy import interpreter

REPO = Path(__file__).resolve().parents[2]

# The host runner's boot order (firmware/host/hostrun.py): fakes first (on the device they are
# built in), then the weights' loader, the code leaves first, then the runner itself.
HOST_FAKES = ("machine", "network", "neopixel", "ntptime")


def boot_order(build: Path) -> list[str]:
    src = (REPO / "firmware" / "host" / "hostrun.py").read_text()
    body = re.search(r"_IMPORT_ORDER = \((.*?)\)", src, re.S)
    order = re.findall(r'"([\w.]+)"', body.group(1)) if body else []
    return [*HOST_FAKES, "firmware.modelfile", *order, "firmware.main", "hostrun"]


_SCRIPT = """
import sys, gc, micropython
sys.path.insert(0, %(build)r); sys.path.insert(0, %(build)r + "/host")
gc.collect(); print("BASE", gc.mem_alloc()); micropython.qstr_info()
for name in %(order)r:
    __import__(name); gc.collect(); print("MOD", name, gc.mem_alloc()); micropython.qstr_info()
"""

_QSTR = re.compile(r"n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)")


def measure(build: Path, heap: str = "400K") -> list[dict]:
    order = boot_order(build)
    script = _SCRIPT % {"build": str(build), "order": order}
    proc = subprocess.run(
        [*interpreter(), "-X", f"heapsize={heap}", "-c", script],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"heap_report: import failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    rows, prev = [], None
    lines = proc.stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("BASE", "MOD")):
            q = _QSTR.search(lines[i + 1])
            assert q, lines[i + 1]
            cur = {
                "name": line.split()[1] if line.startswith("MOD") else "(interpreter)",
                "alloc": int(line.split()[-1]),
                "pools": int(q.group(1)),
                "qstrs": int(q.group(2)),
                "qstr_bytes": int(q.group(4)),
            }
            if prev is not None:
                rows.append({
                    "module": cur["name"],
                    "bytes": cur["alloc"] - prev["alloc"],
                    "qstrs": cur["qstrs"] - prev["qstrs"],
                    "qstr_bytes": cur["qstr_bytes"] - prev["qstr_bytes"],
                    "new_pool": cur["pools"] > prev["pools"],
                    "total_qstrs": cur["qstrs"],
                    "alloc": cur["alloc"],
                })  # fmt: skip
            else:
                rows.append({"module": "(interpreter)", "bytes": cur["alloc"], "qstrs": 0,
                             "qstr_bytes": 0, "new_pool": False, "total_qstrs": cur["qstrs"],
                             "alloc": cur["alloc"]})  # fmt: skip
            prev = cur
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", type=Path, default=REPO / "var" / "fw-host",
                    help="host build to measure (compiled first when missing)")  # fmt: skip
    ap.add_argument("--heap", default="400K")
    args = ap.parse_args(argv)
    if not (args.build / "firmware").is_dir():
        from firmware.tools.bundle import compile_host

        compile_host(args.build)
    rows = measure(args.build, args.heap)
    print(f"{'module':24} {'bytes':>7} {'qstrs':>6} {'qstr B':>7} {'rest':>7} {'all qstrs':>9}")
    host = 0
    for r in rows:
        step = "  <- new qstr pool" if r["new_pool"] else ""
        print(
            f"{r['module']:24} {r['bytes']:7d} {r['qstrs']:6d} {r['qstr_bytes']:7d} "
            f"{r['bytes'] - r['qstr_bytes']:7d} {r['total_qstrs']:9d}{step}"
        )
        if r["module"] in (*HOST_FAKES, "hostrun"):
            host += r["bytes"]
    total = rows[-1]["alloc"]
    print(f"all code loaded: {total} B in use ({host} B of it host-only fakes and runner), "
          f"{rows[-1]['total_qstrs']} qstrs")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
