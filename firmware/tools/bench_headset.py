"""`make bench`: the whole headset firmware on the MicroPython unix port — ten minutes of the
demo conversation as a headset hears it, through features, model, attribution, policy, outputs,
flash queue and MQTT to a private Mosquitto — timed, with the heap figures.

Figures: real-time factor of the firmware (wall time / audio time, faster than real time because
the fake I2S returns at once), free heap after 1 and 10 minutes, lowest free heap, and the
smallest -X heapsize (of a few tried) it runs in.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from calmcue.shared.broker import Mosquitto
from calmcue.shared.mpy import interpreter
from firmware.tools.bundle import compile_host

REPO = Path(__file__).resolve().parents[2]
DEMO_WAV = REPO / "calmcue" / "data" / "demo_conversation.wav"
RUNNER = REPO / "firmware" / "host" / "runner.py"
HEAPS = ("64K", "72K", "76K", "80K", "84K", "88K", "92K", "96K")
# The heap the figures are taken at: the tests' (tests/test_fw_headset.py HEAP).
FIGURES_HEAP = "96K"


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


def run(build: Path, wav: Path, port: int, heap: str, seconds: int) -> tuple[list[dict], float]:
    with tempfile.TemporaryDirectory(prefix="calmcue-flash-") as flash:
        cmd = [
            *interpreter(), "-X", f"heapsize={heap}", str(RUNNER), "--build", str(build),
            "--flash", flash, "--wav", str(wav), "--mqtt-port", str(port),
            "--seconds", str(seconds), "--heap-at", "60,600",
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
    }
    for k, v in figures.items():
        print(f"   {k}: {v}")
    return figures


if __name__ == "__main__":
    main()
