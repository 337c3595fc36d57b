"""The committed model files: size, opset, operators, metadata, and the device form made from
exactly this ONNX file behaving the same under onnxruntime, CPython and MicroPython."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from firmware.core import nnrt
from models import features
from models.export import to_compact

MODELS = Path(__file__).resolve().parent.parent / "models"


def _meta() -> dict:
    return json.loads((MODELS / "stress.json").read_text())


def test_onnx_is_small_pinned_and_uses_few_operators():
    path = MODELS / "stress.onnx"
    assert path.stat().st_size <= 64 * 1024
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    assert {n.op_type for n in model.graph.node} <= {
        "Sub",
        "Mul",
        "Gemm",
        "Relu",
        "Tanh",
        "Sigmoid",
    }
    props = {p.key: p.value for p in model.metadata_props}
    meta = _meta()
    assert meta["onnx_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert float(props["threshold"]) == meta["threshold"]
    assert 0.0 < meta["threshold"] < 1.0
    assert (
        props["feature_order"].split(",") == list(features.FEATURE_NAMES) == meta["feature_order"]
    )
    assert 500 <= meta["n_params"] <= 5000


def test_device_form_is_the_converted_onnx_and_agrees():
    blob = (MODELS / "stress.ccm").read_bytes()
    assert blob == to_compact(MODELS / "stress.onnx", _meta()["model_id"])
    dev = nnrt.Model(blob)
    assert dev.n_in == features.N_FEATURES and dev.name == _meta()["model_id"]
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(200, dev.n_in)) * 3).astype(np.float32)
    sess = ort.InferenceSession(str(MODELS / "stress.onnx"), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"features": x})[0][:, 0]
    got = np.array([dev.score(list(map(float, r))) for r in x])
    assert np.abs(got - ref).max() < 1e-5
    assert ref.std() > 0.05  # random inputs do move the score


def _rows(n: int, k: int) -> list[list[float]]:
    # Deterministic spread of values, computed identically in CPython and MicroPython.
    return [[((i * k + j) * 7919 % 211) / 35.0 - 3.0 for j in range(k)] for i in range(n)]


def test_shipped_model_under_micropython_64k_heap(mpy):
    """The model loads and runs in the device's heap budget (64 KB) and matches onnxruntime.
    Its speed on the S3 is the timing model's instruction count (tests/test_fw_timing.py):
    a wall-clock limit here would measure how busy this machine is."""
    k = features.N_FEATURES
    rows = np.array(_rows(40, k), dtype=np.float32)
    sess = ort.InferenceSession(str(MODELS / "stress.onnx"), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"features": rows})[0][:, 0]
    code = f"""
import json
from firmware.core import nnrt
import gc
m = nnrt.load({str(MODELS / "stress.ccm")!r})
row = [0.0] * {k}
out = []
for rep in range(5):
    for i in range(40):
        for j in range({k}):
            row[j] = ((i * {k} + j) * 7919 % 211) / 35.0 - 3.0
        s = m.score(row)
        if rep == 0:
            out.append(s)
gc.collect()
print(json.dumps({{"s": out, "free": gc.mem_free()}}))
"""
    res = json.loads(mpy(code, heapsize="64K").stdout)
    assert np.abs(np.array(res["s"]) - ref).max() < 1e-5
    assert ref.std() > 0.05
