"""ONNX export, the ONNX -> compact converter and firmware/core/nnrt.py, against onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from firmware.core import nnrt
from models.export import ConvertError, Network, to_compact, to_onnx


def _net(
    n_in: int = 20, hidden: tuple[int, ...] = (16, 8), activation: str = "relu", seed: int = 0
):
    rng = np.random.default_rng(seed)
    sizes = [n_in, *hidden, 1]
    ws = [rng.normal(size=(o, i)) / np.sqrt(i) for i, o in zip(sizes, sizes[1:], strict=False)]
    bs = [rng.normal(size=o) * 0.1 for o in sizes[1:]]
    return Network(rng.normal(size=n_in), 1 / rng.uniform(0.5, 2, n_in), ws, bs, activation)


def _ort(model, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"features": x.astype(np.float32)})[0][:, 0]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_export_and_compact_match_onnxruntime(activation: str):
    net = _net(activation=activation)
    model = to_onnx(net)
    assert model.opset_import[0].version == 13
    assert {n.op_type for n in model.graph.node} <= {
        "Sub",
        "Mul",
        "Gemm",
        "Relu",
        "Tanh",
        "Sigmoid",
    }
    x = np.random.default_rng(1).normal(size=(300, 20)) * 2
    ref = _ort(model, x)
    assert np.abs(ref - net.predict(x)).max() < 1e-5
    dev = nnrt.Model(to_compact(model))
    got = np.array([dev.score(list(map(float, row))) for row in x.astype(np.float32)])
    assert np.abs(got - ref).max() < 1e-5


def test_converter_folds_matmul_add_and_div():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(6, 3)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    d = rng.uniform(1, 2, 6).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Div", ["x", "d"], ["a"]),
            helper.make_node("MatMul", ["a", "w"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["z"]),
            helper.make_node("Tanh", ["z"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v, n) for v, n in ((w, "w"), (b, "b"), (d, "d"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = rng.normal(size=(50, 6)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})[0]
    dev = nnrt.Model(to_compact(model))
    got = np.array([list(dev.run(list(map(float, row)))) for row in x])
    assert np.abs(got - ref).max() < 1e-5


def test_converter_refuses_unsupported_operator():
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    with pytest.raises(ConvertError, match="operator Softmax is not supported"):
        to_compact(helper.make_model(graph))


def test_runtime_rejects_bad_files_and_inputs():
    with pytest.raises(nnrt.ModelError, match="CCM1"):
        nnrt.Model(b"ONNX....")
    blob = to_compact(to_onnx(_net()))
    with pytest.raises(nnrt.ModelError, match="truncated"):
        nnrt.Model(blob[:-4])
    with pytest.raises(nnrt.ModelError, match="needs 20 features, got 3"):
        nnrt.Model(blob).score([1.0, 2.0, 3.0])


def test_micropython_matches_onnxruntime(mpy, tmp_path):
    net = _net(n_in=40, hidden=(32, 16))
    model = to_onnx(net)
    (tmp_path / "m.ccm").write_bytes(to_compact(model))
    x = (np.random.default_rng(5).normal(size=(100, 40)) * 2).astype(np.float32)
    (tmp_path / "x.json").write_text(json.dumps(x.tolist()))
    code = f"""
import json, time
from firmware.core import nnrt
m = nnrt.load({str(tmp_path / "m.ccm")!r})
rows = json.load(open({str(tmp_path / "x.json")!r}))
out = [m.score(r) for r in rows]
print(json.dumps({{"scores": out}}))
"""
    res = json.loads(mpy(code, heapsize="512K").stdout)
    assert np.abs(np.array(res["scores"]) - _ort(model, x)).max() < 1e-5
    # How fast is measured where it means something: the S3's instruction count per audio
    # second (tests/test_fw_timing.py, docs/firmware.md "Timing") and make bench; a wall-clock
    # limit on a shared machine only measures the machine.
    assert net.n_params > 1800


def test_merged_ensemble_is_the_mean_logit_and_exports():
    from models.export import merge_ensemble

    members = [_net(n_in=12, hidden=(6, 4), activation="tanh", seed=s) for s in range(3)]
    members = [
        Network(members[0].mean, members[0].scale, m.weights, m.biases, "tanh") for m in members
    ]
    x = np.random.default_rng(9).normal(size=(64, 12))
    p = np.array([m.predict(x) for m in members])
    want = 1 / (1 + np.exp(-np.mean(np.log(p / (1 - p)), axis=0)))
    merged = merge_ensemble(members)
    assert np.abs(merged.predict(x) - want).max() < 1e-12
    assert merged.n_params > 3 * members[0].n_params  # block-diagonal zeros count as weights
    model = to_onnx(merged)
    assert np.abs(_ort(model, x) - want).max() < 1e-5
    dev = nnrt.Model(to_compact(model))
    got = np.array([dev.score(list(map(float, r))) for r in x.astype(np.float32)])
    assert np.abs(got - want).max() < 1e-5


def test_merged_heads_can_weigh_their_logits():
    """`TrainSettings.head_weights`: the merged network's logit is the weighted sum of its
    members' logits, still one exportable chain."""
    from models.export import merge_ensemble

    members = [_net(n_in=12, hidden=(6, 4), activation="tanh", seed=s) for s in range(2)]
    members = [
        Network(members[0].mean, members[0].scale, m.weights, m.biases, "tanh") for m in members
    ]
    x = np.random.default_rng(3).normal(size=(64, 12))
    logits = np.array([np.log(p / (1 - p)) for p in (m.predict(x) for m in members)])
    want = 1 / (1 + np.exp(-(0.3 * logits[0] + 0.9 * logits[1])))
    merged = merge_ensemble(members, [0.3, 0.9])
    assert np.abs(merged.predict(x) - want).max() < 1e-12
    assert (
        np.abs(
            merge_ensemble(members, [0.5, 0.5]).predict(x) - merge_ensemble(members).predict(x)
        ).max()
        < 1e-12
    )
    assert np.abs(_ort(to_onnx(merged), x) - want).max() < 1e-5


@pytest.mark.parametrize("softness", [1.0, 0.5])
def test_min_of_heads_is_one_device_chain(softness: float):
    """`TrainSettings.head_min`: the merged logit leans from the heads' mean towards the
    smaller head logit (softness 1: exactly min); ONNX, the compact form and nnrt agree."""
    _min_of_heads(softness)


def _min_of_heads(softness: float):
    from models.export import merge_min

    nets = [_net(n_in=12, hidden=(6, 4), activation="tanh", seed=s) for s in range(3)]
    nets = [Network(nets[0].mean, nets[0].scale, m.weights, m.biases, "tanh") for m in nets]
    heads = [nets[:2], nets[2:]]  # a two-member head and a one-member head
    x = np.random.default_rng(4).normal(size=(200, 12)) * 2
    lg = np.array([np.log(p / (1 - p)) for p in (m.predict(x) for m in nets)])
    a, b = (lg[0] + lg[1]) / 2, lg[2]
    want_logit = 0.5 * a + 0.5 * b - softness * np.abs(a - b) / 2
    if softness == 1.0:
        assert np.allclose(want_logit, np.minimum(a, b))
    want = 1 / (1 + np.exp(-want_logit))
    merged = merge_min(heads, softness=softness)
    assert merged.layer_activations() == ("tanh", "tanh", "relu")
    assert np.abs(merged.predict(x) - want).max() < 1e-12
    # Both heads must call a window stressed: where they disagree, the score is not their mean.
    assert (np.sign(a) != np.sign(b)).any()
    model = to_onnx(merged)
    assert [n.op_type for n in model.graph.node].count("Relu") == 1
    assert np.abs(_ort(model, x) - want).max() < 1e-5
    dev = nnrt.Model(to_compact(model))
    got = np.array([dev.score(list(map(float, r))) for r in x.astype(np.float32)])
    assert np.abs(got - want).max() < 1e-5
    with pytest.raises(ValueError):
        merge_min([nets])
    return model, x, want


def test_min_of_heads_on_micropython(mpy, tmp_path):
    """The min-of-heads chain (a Relu after the Tanh layers) on the MicroPython unix port."""
    model, x, want = _min_of_heads(1.0)
    (tmp_path / "m.ccm").write_bytes(to_compact(model))
    (tmp_path / "x.json").write_text(json.dumps(x.astype(np.float32).tolist()))
    code = f"""
import json
from firmware.core import nnrt
m = nnrt.load({str(tmp_path / "m.ccm")!r})
print(json.dumps([m.score(r) for r in json.load(open({str(tmp_path / "x.json")!r}))]))
"""
    got = np.array(json.loads(mpy(code, heapsize="512K").stdout))
    assert np.abs(got - want).max() < 1e-5


def test_head_min_setting_merges_by_min_and_export_refuses_it(tmp_path):
    from dataclasses import replace

    from models import pipeline, train

    nets = [_net(n_in=12, hidden=(6, 4), activation="tanh", seed=s) for s in range(2)]
    nets = [Network(nets[0].mean, nets[0].scale, m.weights, m.biases, "tanh") for m in nets]
    x = np.random.default_rng(6).normal(size=(50, 12)) * 2
    lg = np.array([np.log(p / (1 - p)) for p in (m.predict(x) for m in nets)])
    s = train.TrainSettings()
    mean = train.merge_heads(nets, s)
    assert np.abs(mean.predict(x) - 1 / (1 + np.exp(-lg.mean(axis=0)))).max() < 1e-12
    low = train.merge_heads(nets, replace(s, head_min=1.0))
    assert np.abs(low.predict(x) - 1 / (1 + np.exp(-lg.min(axis=0)))).max() < 1e-12
    with pytest.raises(ValueError, match="two heads"):
        train.merge_heads(nets, replace(s, head_min=1.0, heads=(("calm",),)))
    t = pipeline.Trained(s, [], [], [low], {}, low, 0.5, np.zeros(0), "")
    with pytest.raises(ValueError, match="head_min"):
        pipeline.run_export(t, out_dir=tmp_path, work=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written
