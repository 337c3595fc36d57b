"""MicroPython extractor vs the numpy reference on EVERY RAVDESS clip, within the per-column
tolerances of docs/features.md, in one MicroPython process (-X heapsize=64K). Audio is decoded
here and streamed through a pipe; nothing is written to disk."""

from __future__ import annotations

import resource

import numpy as np

from models.bench_features import (
    ROW_NAMES,
    load_int16,
    numpy_rows,
    ravdess_paths,
    row_tolerances,
    run_micropython,
)


def test_parity_every_ravdess_clip(ravdess) -> None:
    paths = ravdess_paths(1, ravdess)
    assert len(paths) == 1440
    clips = [load_int16(p) for p in paths]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    got, live, _ = run_micropython(clips, chunk=1000, heapsize="64K", timeout=600)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    tol = row_tolerances()
    worst = np.zeros(len(ROW_NAMES))
    windows = 0
    for path, x, g in zip(paths, clips, got, strict=True):
        ref = numpy_rows(x)
        assert g.shape == ref.shape, path
        diff = np.abs(g - ref)
        bad = diff > tol
        assert not bad.any(), (path, [ROW_NAMES[i] for i in np.flatnonzero(bad.any(axis=0))])
        if len(diff):
            worst = np.maximum(worst, diff.max(axis=0))
        windows += len(g)
    assert windows > 10000
    # Real-time factor of the MicroPython extractor from the child's CPU time (robust to a busy
    # machine): start-up, stdin parsing and printing included.
    audio_s = sum(len(c) for c in clips) / 16000
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    assert cpu / audio_s <= 0.01, cpu / audio_s
    # live heap after each clip (the last records are still referenced): bounded, no growth
    assert max(live) < 32 * 1024 and max(live) - min(live) < 2048
    print(
        f"parity: {len(clips)} clips, {windows} windows, CPU RTF {cpu / audio_s:.5f}, live {live[-1]}"
    )
    print("max |MicroPython - numpy|:", dict(zip(ROW_NAMES, worst.round(12).tolist(), strict=True)))
