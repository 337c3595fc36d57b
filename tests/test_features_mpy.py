"""MicroPython feature extractor (firmware/core/features.py) on the real unix port: no allocation per
frame, 64 KB heap, chunk-size invariance, and parity with numpy on synthetic signals. The module
is precompiled with mpy-cross, as it is on the device (compiling the source needs ~72 KB)."""

from __future__ import annotations

import json

import numpy as np

from models.bench_features import (
    ROW_NAMES,
    load_int16,
    numpy_rows,
    row_tolerances,
    run_code,
    run_micropython,
    synthetic_voice,
)

# Generates a voice-like test signal frame by frame inside MicroPython (integers only), feeds
# the extractor one 25 ms frame at a time and measures gc.mem_alloc() around each process().
ALLOC_PROBE = r"""
import gc, json
from array import array
from firmware.core.features import Features

fx = Features()
buf = array("h", bytes(800))
state = array("i", [0, 12345])  # sample counter, noise seed


def fill():
    n = state[0]
    seed = state[1]
    for i in range(400):
        # 150 Hz sawtooth about -20 dBFS, on 60 % of every 0.5 s (syllables), plus faint noise
        saw = ((n * 150) % 16000) * 4 - 32000
        v = saw >> 3 if (n // 1600) % 5 < 3 else 0
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        buf[i] = v + (seed >> 24) - 64
        n += 1
    state[0] = n
    state[1] = seed


for _ in range(120):  # 3 s: warm up, baseline settles
    fill()
    fx.process(buf)

frame_allocs = []
window_allocs = []
speech = voiced = 0.0
recs = used = before = None  # globals exist before measuring (a new global grows the dict)
for _ in range(80):  # 2 s measured, frame by frame
    fill()
    gc.collect()
    before = gc.mem_alloc()
    recs = fx.process(buf)
    used = gc.mem_alloc() - before
    if recs:
        window_allocs.append(used)
        speech += recs[0]["speech"]
        voiced += recs[0]["f0_hz"] > 0
    else:
        frame_allocs.append(used)
gc.collect()
print(json.dumps({"frame": frame_allocs, "window": window_allocs, "speech": speech,
                  "voiced": voiced, "live": gc.mem_alloc()}))
"""


def test_no_allocation_per_frame_in_steady_state() -> None:
    out = run_code(ALLOC_PROBE, heapsize="64K").stdout.decode().strip().splitlines()[-1]
    res = json.loads(out)
    assert len(res["frame"]) == 72 and len(res["window"]) == 8
    assert res["speech"] > 4 and res["voiced"] == 8  # the speech and pitch paths really ran
    assert max(res["frame"]) == 0, res["frame"]  # frames without a window allocate nothing
    # Completing a window (every 10th frame) boxes a few floats and builds the record: short-lived
    # garbage of about 4-6 KB that the next collection frees.
    assert max(res["window"]) < 8 * 1024, res["window"]


def test_heap_and_chunk_size_invariance_synthetic() -> None:
    x = synthetic_voice(170, -25, seconds=4.0, syllable_hz=3.0)
    ref = numpy_rows(x)
    outs = []
    for chunk in (1, 97, 400, 1000, 4096):
        (got,), live, _ = run_micropython([x], chunk=chunk, heapsize="64K")
        outs.append(got)
        assert live[0] < 32 * 1024  # live heap: extractor + runner
    for got in outs[1:]:
        assert np.array_equal(got, outs[0])  # identical, not merely close
    assert np.all(np.abs(outs[0] - ref) <= row_tolerances())


def test_chunk_size_invariance_ravdess(ravdess) -> None:
    x = load_int16(ravdess / "Actor_05/03-01-05-02-01-01-05.flac")
    ref = numpy_rows(x)
    outs = [run_micropython([x], chunk=c)[0][0] for c in (160, 401, 2048)]
    for got in outs:
        assert np.array_equal(got, outs[0])
    assert np.all(np.abs(outs[0] - ref) <= row_tolerances())


def _edge_signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    voice = synthetic_voice(160, -30, seconds=3.0, syllable_hz=3.0)
    return {
        **{f"pitch{f0}": synthetic_voice(f0, -30, seconds=2.5) for f0 in (85, 150, 260, 440)},
        **{f"sine{lv}": synthetic_voice(200, lv, harmonics=False) for lv in (-6, -30, -50)},
        "syllables": voice,
        "silence": np.zeros(48000, dtype=np.int16),
        "noise": np.clip(rng.normal(0, 3000, 48000), -32768, 32767).astype(np.int16),
        "clipped": np.clip(voice.astype(np.int32) * 100, -32768, 32767).astype(np.int16),
        "dc": np.clip(voice.astype(np.int32) + 6000, -32768, 32767).astype(np.int16),
        "full_scale_square": np.where(np.arange(48000) % 100 < 50, 32767, -32768).astype(np.int16),
        "two_voices": np.concatenate(
            [synthetic_voice(f, -30, syllable_hz=3.0, seed=f) for f in (110, 220, 110, 330)]
        ),
    }


def test_parity_on_synthetic_signals() -> None:
    sigs = _edge_signals()
    got, _, _ = run_micropython(list(sigs.values()), chunk=512, heapsize="64K")
    tol = row_tolerances()
    for (name, x), g in zip(sigs.items(), got, strict=True):
        ref = numpy_rows(x)
        assert g.shape == ref.shape, name
        assert np.all(np.isfinite(g)), name
        bad = np.abs(g - ref) > tol
        assert not bad.any(), (name, [ROW_NAMES[i] for i in np.flatnonzero(bad.any(axis=0))])


def test_odd_byte_chunk_is_refused_clearly() -> None:
    code = (
        "from firmware.core.features import Features\n"
        "try:\n"
        "    Features().process(b'\\x00\\x01\\x02')\n"
        "except ValueError as e:\n"
        "    print('refused:', e)\n"
    )
    out = run_code(code).stdout.decode()
    assert "refused: PCM chunk must hold whole int16 samples" in out
