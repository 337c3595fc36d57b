"""The ESP32 path (firmware/core/features.py + firmware/core/nnrt.py + stress.ccm in the MicroPython unix
port) against the Pi path (numpy features + stress.onnx in onnxruntime) on EVERY RAVDESS clip:
clip scores and every window score within 0.01."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.corpora import read_manifest
from models.scoring import score_files


def test_every_ravdess_clip_scores_the_same_on_both_engines(ravdess: Path):
    paths = [str(c.path) for c in read_manifest(ravdess / "manifest.csv")]
    ref = list(score_files(paths, "onnxruntime"))
    dev = list(score_files(paths, "micropython"))
    assert len(ref) == len(dev) == len(paths) == 1440
    worst_clip = worst_window = 0.0
    n_windows = n_scored = 0
    for a, b in zip(ref, dev, strict=True):
        assert a["path"] == b["path"] and "error" not in a and "error" not in b
        assert (a["score"] is None) == (b["score"] is None), a["path"]
        if a["score"] is not None:
            worst_clip = max(worst_clip, abs(a["score"] - b["score"]))
        assert [w["t"] for w in a["windows"]] == [w["t"] for w in b["windows"]], a["path"]
        assert [w["speech"] for w in a["windows"]] == [w["speech"] for w in b["windows"]]
        d = [
            abs(x["score"] - y["score"])
            for x, y in zip(a["windows"], b["windows"], strict=True)
            if x["score"] is not None
        ]
        worst_window = max([worst_window, *d])
        n_windows += len(a["windows"])
        n_scored += len(d)
    print(
        f"{len(paths)} clips, {n_windows} windows ({n_scored} scored): max |diff| clip {worst_clip:.5f}, "
        f"window {worst_window:.5f}"
    )
    assert n_windows > 10 * len(paths)
    assert n_scored > 5 * len(paths)  # windows with speech, scored on both engines
    assert worst_clip <= 0.01
    assert worst_window <= 0.01
    # not a trivially constant model: scores spread over the range
    assert np.std([r["score"] for r in ref if r["score"] is not None]) > 0.2
