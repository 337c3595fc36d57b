"""`make bench` figures for the stress model: size, inference time (MicroPython and
onnxruntime), held-out accuracy and robustness next to the eGeMAPS + logistic-regression anchor.

Accuracy is measured, not read back: the speaker-grouped models are (re)trained when the cached
ones are missing or stale, then evaluated together with the anchor on the same splits and the
same level-shifted, noisy and reverberant copies (features cached under var/).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _micropython_latency(ccm: Path, rows: np.ndarray) -> dict:
    from calmcue.shared import mpy

    data = json.dumps(rows.astype(float).round(5).tolist())
    code = f"""
import gc, json, time
gc.collect()
before = gc.mem_alloc()
from firmware.core import nnrt
m = nnrt.load({str(ccm)!r})
gc.collect()
model_heap = gc.mem_alloc() - before
rows = json.loads({data!r})
best = 1e9
for rep in range(3):
    t0 = time.ticks_us()
    for r in rows:
        m.score(r)
    best = min(best, time.ticks_diff(time.ticks_us(), t0) / len(rows))
print(json.dumps({{"us_per_window": best, "model_heap_bytes": model_heap}}))
"""
    out = mpy.run(code, heapsize="1M").stdout.strip().splitlines()[-1]
    return json.loads(out)


def main() -> dict:
    import onnx
    import onnxruntime as ort

    from models import dataset, pipeline
    from models.corpora import load_ravdess

    onnx_path = REPO / "models" / "stress.onnx"
    ccm_path = REPO / "models" / "stress.ccm"
    meta = json.loads((REPO / "models" / "stress.json").read_text())
    model = onnx.load(str(onnx_path))
    res: dict = {
        "onnx_bytes": onnx_path.stat().st_size,
        "ccm_bytes": ccm_path.stat().st_size,
        "params": meta["n_params"],
        "opset": model.opset_import[0].version,
        "ops": sorted({n.op_type for n in model.graph.node}),
        "threshold": meta["threshold"],
    }
    # Real window features from a few clips, so the timing sees realistic values.
    clips = load_ravdess(pipeline.RAVDESS)[::97]
    rows = np.concatenate([dataset.extract(dataset.read_audio(c.path)).features for c in clips])
    res["micropython"] = _micropython_latency(ccm_path, rows)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    one = rows[:1].astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(2000):
        sess.run(None, {"features": one})
    res["onnxruntime_us_per_window"] = round((time.perf_counter() - t0) / 2000 * 1e6, 1)
    print(f"   ONNX {res['onnx_bytes']} B, compact {res['ccm_bytes']} B, {res['params']} params")
    print(
        f"   MicroPython {res['micropython']['us_per_window']:.0f} us/window, "
        f"onnxruntime {res['onnxruntime_us_per_window']} us/window"
    )

    try:
        trained = pipeline.load_trained()
        stale = trained.features_version != dataset.feature_version()
    except FileNotFoundError:
        stale = True
    if stale:
        trained = pipeline.run_train()
    m = pipeline.run_evaluate(trained, anchor=True)
    ours = m["speaker_folds"]["with_lead_in"]
    anchor = m["anchor_egemaps_lr"]
    res["heldout"] = {
        "ours_clean": ours["clean"],
        "ours_no_lead_in_clean": m["speaker_folds"]["no_lead_in"]["clean"],
        "ours_min_balanced_accuracy_over_copies": min(
            v["balanced_accuracy"] for v in ours.values()
        ),
        "ours_gender_out_min_balanced_accuracy": min(
            v["balanced_accuracy"] for v in m["gender_out"]["with_lead_in"].values()
        ),
        "anchor_clean": anchor["speaker_folds"]["clean"],
        "anchor_min_balanced_accuracy@0.5_over_copies": min(
            v["balanced_accuracy@0.5"] for v in anchor["speaker_folds"].values()
        ),
        "anchor_gender_out_min_balanced_accuracy@0.5": min(
            v["balanced_accuracy@0.5"] for v in anchor["gender_out"].values()
        ),
    }
    for k, v in res["heldout"].items():
        print(f"   {k}: {v}")
    return res


if __name__ == "__main__":
    main()
