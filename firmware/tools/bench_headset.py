"""`make bench`: the whole headset firmware on the MicroPython unix port — ten minutes of the
demo conversation as a headset hears it, through features, model, attribution, policy, outputs,
flash queue and MQTT to a private Mosquitto — timed, with the heap figures.

Figures: real-time factor of the firmware (wall time / audio time, faster than real time because
the fake I2S returns at once), free heap after 1 and 10 minutes, lowest free heap, and the
smallest -X heapsize (of a few tried) it runs in; then the same firmware from its ROMFS image
mapped outside the heap (calmcue/shared/romport.py; code in flash, data in the heap): the image's size,
heap used and free at every minute in a 64K heap, the smallest heap it runs in, and the heap the
firmware's code takes when imported from a directory and from the image.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from calmcue.shared import romport
from calmcue.shared.broker import Mosquitto
from calmcue.shared.mpy import interpreter
from firmware.tools.bundle import build as build_bundle
from firmware.tools.bundle import build_romfs, compile_host

REPO = Path(__file__).resolve().parents[2]
DEMO_WAV = REPO / "calmcue" / "data" / "demo_conversation.wav"
RUNNER = REPO / "firmware" / "host" / "runner.py"
HEAPS = ("64K", "72K", "80K", "88K", "96K", "104K", "112K", "120K", "128K")
# The heap the folder-loaded figures are taken at (tests/test_fw_headset.py HEAP: the firmware
# loaded from a folder of .mpy files, code in the heap).
FIGURES_HEAP = "112K"
# From the ROMFS image (tests/test_fw_romfs.py ROM_HEAP is 64K).
ROM_HEAPS = ("40K", "44K", "48K", "52K", "56K", "60K", "64K")
ROM_HEAP = "64K"
MINUTES = ",".join(str(60 * m) for m in range(1, 11))
# The heap the firmware's code takes: free heap before and after the device's load_code().
CODE_COST = """
import gc, os, sys
if PATH == "/rom":
    import uctypes, vfs
    a, n = [int(x) for x in os.getenv("CALMCUE_ROM").split(",")]
    vfs.mount(vfs.VfsRom(uctypes.bytearray_at(a, n)), "/rom")
sys.path.insert(0, PATH)
gc.collect()
before = gc.mem_free()
from firmware.headset.main import load_code
load_code()
gc.collect()
print(before - gc.mem_free())
"""


def headset_rendition(out: Path, src: Path = DEMO_WAV, customer_db: float = -25.0) -> Path:
    """The demo conversation as a headset microphone hears it: the wearer (staff) near field,
    the customer about a metre away, `customer_db` quieter (3 cm vs 1 m is about 30 dB; a raised
    voice closes some of it). Uses the demo's own timeline of who speaks when."""
    x, sr = sf.read(src, dtype="int16")
    timeline = json.loads(src.with_suffix(".json").read_text())
    y = x.astype(np.float64)
    for turn in timeline["turns"]:
        if turn["speaker"] == "customer":
            y[int(turn["start"] * sr) : int(turn["end"] * sr)] *= 10 ** (customer_db / 20)
    sf.write(out, y.astype(np.int16), sr, subtype="PCM_16")
    return out


def run(build: Path, wav: Path, port: int, heap: str, seconds: int,
        rom: Path | None = None, heap_at: str = "60,600") -> tuple[list[dict], float]:  # fmt: skip
    """The runner on `build` (or on its ROMFS image `rom`, mapped outside the heap)."""
    start = [*romport.interpreter(rom)] if rom else [*interpreter()]
    where = ["--rom"] if rom else ["--build", str(build)]
    with tempfile.TemporaryDirectory(prefix="calmcue-flash-") as flash:
        cmd = [
            *start, "-X", f"heapsize={heap}", str(RUNNER), *where,
            "--flash", flash, "--wav", str(wav), "--mqtt-port", str(port),
            "--seconds", str(seconds), "--heap-at", heap_at,
        ]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return [], wall
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")], wall


def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="calmcue-bench-fw-") as tmp, Mosquitto() as broker:
        build = compile_host(Path(tmp) / "build")
        wav = headset_rendition(Path(tmp) / "headset_demo.wav")
        smallest = None
        for size in HEAPS:
            lines, _ = run(build, wav, broker.port, size, 600)
            if lines and any("done" in x for x in lines):
                smallest = size
                break
        lines, wall = run(build, wav, broker.port, FIGURES_HEAP, 600)
        heap: dict[int, int] = {
            int(x["heap"]["t_s"]): x["heap"]["free"] for x in lines if "heap" in x
        }
        done: dict[str, object] = next((x["done"] for x in lines if "done" in x), {})
        cues = sum(1 for x in lines if "evt" in x and x["evt"]["type"] == "cue")
        used_dir = next((x["heap"]["alloc"] for x in lines if "heap" in x), None)

        rom = build_romfs(build, Path(tmp) / "host.romfs")
        rom_size = rom.stat().st_size
        rom_smallest = None
        for size in ROM_HEAPS:
            got, _ = run(build, wav, broker.port, size, 600, rom=rom)
            if got and any("done" in x for x in got):
                rom_smallest = size
                break
        rom_lines, rom_wall = run(build, wav, broker.port, ROM_HEAP, 600, rom=rom, heap_at=MINUTES)
        rom_marks = [x["heap"] for x in rom_lines if "heap" in x]
        rom_done: dict[str, object] = next((x["done"] for x in rom_lines if "done" in x), {})
        rom_big, _ = run(build, wav, broker.port, FIGURES_HEAP, 600, rom=rom)
        used_rom_big = next((x["heap"]["alloc"] for x in rom_big if "heap" in x), None)
        code: dict[str, int | None] = {}
        for name, start, path in (("dir", interpreter(), str(build)),
                                  ("rom", romport.interpreter(rom), "/rom")):  # fmt: skip
            script = Path(tmp) / f"code_{name}.py"
            script.write_text(CODE_COST.replace("PATH", repr(path)))
            proc = subprocess.run([*start, "-X", "heapsize=256K", str(script)],
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            code[name] = int(proc.stdout.split()[0]) if proc.returncode == 0 else None
        # the image the headset carries (xtensawin, with the model), as `make firmware` makes it
        model = REPO / "models" / "stress.ccm"
        device_rom = build_bundle(Path(tmp) / "device", "xtensawin",
                                  model if model.exists() else None)["romfs"]["image_size"]
    figures: dict[str, object] = {
        "audio_s": 600,
        "wall_s": round(wall, 2),
        "rtf": round(wall / 600, 4),
        "heapsize": FIGURES_HEAP,
        "free_heap_after_1_min": heap.get(60),
        "free_heap_after_10_min": heap.get(600),
        "lowest_free_heap": done.get("heap_min"),
        "smallest_heapsize_tried_that_runs": smallest,
        "events_sent": done.get("sent"),
        "cues": cues,
        "heap_used_at_1_min": used_dir,
        "romfs_image_bytes": rom_size,
        "device_romfs_image_bytes": device_rom,
        "rom_heapsize": ROM_HEAP,
        "rom_free_heap_per_minute": [x["free"] for x in rom_marks],
        "rom_heap_used_per_minute": [x["alloc"] for x in rom_marks],
        "rom_lowest_free_heap": rom_done.get("heap_min"),
        "rom_events_sent": rom_done.get("sent"),
        "rom_rtf": round(rom_wall / 600, 4),
        "rom_heap_used_at_figures_heap": used_rom_big,
        "rom_smallest_heapsize_tried_that_runs": rom_smallest,
        "code_heap_bytes_from_directory": code["dir"],
        "code_heap_bytes_from_romfs": code["rom"],
    }
    for k, v in figures.items():
        print(f"   {k}: {v}")
    used = sorted({x["alloc"] for x in rom_marks})
    print(f"   64K headset demo from its ROMFS image: heap used {used} B per minute (of "
          f"{64 * 1024}), image {rom_size} B (host build, outside the heap), device image "
          f"{device_rom} B")  # fmt: skip
    return figures


if __name__ == "__main__":
    main()
