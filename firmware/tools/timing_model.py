"""The headset's timing model: how many CPU cycles one second of audio costs on the ESP32-S3,
estimated from instruction counts of the same compiled firmware on the MicroPython unix port.

    python -m firmware.tools.timing_model [--seconds 30] [--json]

Runs the x64 build (bundle.compile_host: the device modules compiled by mpy-cross, native code
for @viper/@native) under valgrind's callgrind, which counts the instructions executed (Ir):
once set up without audio and once with S seconds of the headset demo, for the feature front
end alone and for the whole per-hop pipeline (features, model, attribution, policy). The
difference over S is instructions per audio second. On the S3 (Xtensa LX7, in-order, code and
constants from flash through a cache) one x86-64 instruction of the interpreter is taken as 1.5
to 3 cycles: the model's range, to be confirmed or refuted by the first board
(firmware/tools/smoke_headset.py prints the measured real-time factor). docs/firmware.md,
"Timing", has the figures, the CPU frequency chosen and the margin.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from calmcue.shared.mpy import interpreter

# Xtensa LX7 cycles per x86-64 instruction of the same MicroPython code: the model's range.
CYCLES_PER_INSTR = (1.5, 3.0)
FREQS_MHZ = (80, 160, 240)

SCRIPT = r"""
import sys, os
from array import array
sys.path[:0] = [%(build)r]
mode, secs = sys.argv[1], int(sys.argv[2])
f = open(%(wav)r, "rb")
hop = array("h", bytearray(1600))
def audio():
    if f.readinto(hop) < 1600:
        f.seek(44)
        f.readinto(hop)
if mode.startswith("features"):
    from firmware.core.features import Features
    fx = Features()
    step = lambda t: fx.process(hop)
else:
    from firmware.headset.modelfile import load_model
    from firmware.core.pipeline import Pipeline
    p = Pipeline({}, os.urandom, load_model(%(build)r + "/")[0])
    step = lambda t: p.process(hop, 800, t)
f.seek(44)
for i in range(secs * 20):
    audio()
    if mode.endswith("run"):
        step((i + 1) / 20)
print("done")
"""


def _ir(cmd: list[str]) -> int:
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    m = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not m or "done" not in proc.stdout:
        raise RuntimeError(f"callgrind run failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    return int(m.group(1))


def measure(seconds: int = 30) -> dict[str, object]:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    from firmware.tools import bundle
    from firmware.tools.bench_headset import headset_rendition

    with tempfile.TemporaryDirectory(prefix="calmcue-timing-") as tmp:
        build = bundle.compile_host(Path(tmp) / "build")
        wav = headset_rendition(Path(tmp) / "headset.wav")
        script = Path(tmp) / "timing.py"
        script.write_text(SCRIPT % {"build": str(build), "wav": str(wav)})
        mpy = [*interpreter(), "-X", "heapsize=256K", str(script)]
        ir = {m: _ir([*mpy, m, str(seconds)]) for m in
              ("features-setup", "features-run", "pipeline-setup", "pipeline-run")}
    features = (ir["features-run"] - ir["features-setup"]) / seconds
    pipeline = (ir["pipeline-run"] - ir["pipeline-setup"]) / seconds
    out: dict[str, object] = {
        "audio_s": seconds,
        "instr_per_audio_s": {"features": round(features), "model_attribution_policy":
                              round(pipeline - features), "pipeline": round(pipeline)},
        "cycles_per_instr": list(CYCLES_PER_INSTR),
        "s3_mcycles_per_audio_s": [round(pipeline * c / 1e6, 1) for c in CYCLES_PER_INSTR],
        "rtf": {f"{mhz}MHz": [round(pipeline * c / (mhz * 1e6), 3) for c in CYCLES_PER_INSTR]
                for mhz in FREQS_MHZ},
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=30, help="audio per measured run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = measure(args.seconds)
    if args.json:
        print(json.dumps(r))
        return 0
    ips = r["instr_per_audio_s"]
    assert isinstance(ips, dict)
    print(f"x86-64 instructions per second of audio (unix port, {args.seconds} s measured):")
    for k, v in ips.items():
        print(f"  {k:26s} {v / 1e6:8.1f} M")
    print(f"ESP32-S3 at {CYCLES_PER_INSTR[0]}-{CYCLES_PER_INSTR[1]} cycles per instruction: "
          "real-time factor (CPU time per audio time)")
    rtf = r["rtf"]
    assert isinstance(rtf, dict)
    for k, (lo, hi) in rtf.items():
        print(f"  {k:>7s}: {lo:.3f} - {hi:.3f}   (margin x{1 / hi:.1f} - x{1 / lo:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
