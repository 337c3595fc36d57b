"""The trained network as ONNX (pinned opset) and as the compact form firmware/core/nnrt.py runs.

The ONNX graph is written by hand with onnx.helper so it holds only a handful of operators:
input standardisation (Sub, Mul), dense layers (Gemm), Relu/Tanh and a final Sigmoid. The
converter accepts exactly the linear chains such graphs form and refuses anything else with a
message naming the operator, so a model the device cannot run is caught on the bench.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

OPSET = 13
IR_VERSION = 8  # readable by onnxruntime >= 1.10
INPUT_NAME = "features"
OUTPUT_NAME = "stress_score"
ACTIVATIONS = ("relu", "tanh")


class ConvertError(ValueError):
    pass


@dataclass(frozen=True)
class Network:
    """A trained MLP with its input standardisation: score = sigmoid(f(x - mean) * scale)."""

    mean: np.ndarray  # (n_in,)
    scale: np.ndarray  # (n_in,) = 1 / std
    weights: list[np.ndarray]  # each (n_out, n_in), row = one output unit
    biases: list[np.ndarray]
    activation: str = "relu"
    name: str = "stress"
    feature_names: tuple[str, ...] = field(default=())
    # One activation per hidden layer when they differ (a min-of-heads tail ends in a Relu
    # layer after the Tanh ones: merge_min); empty: `activation` after every hidden layer.
    activations: tuple[str, ...] = field(default=())

    def layer_activations(self) -> tuple[str, ...]:
        n = len(self.weights) - 1
        if not self.activations:
            return (self.activation,) * n
        if len(self.activations) != n:
            raise ValueError(f"{len(self.activations)} activations for {n} hidden layers")
        return tuple(self.activations)

    @property
    def n_params(self) -> int:
        return int(sum(w.size + b.size for w, b in zip(self.weights, self.biases, strict=True)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Reference forward pass in float64 (the ONNX graph must agree)."""
        h = (np.asarray(x, np.float64) - self.mean) * self.scale
        acts = self.layer_activations()
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w.T + b
            if i < len(acts):
                h = np.maximum(h, 0.0) if acts[i] == "relu" else np.tanh(h)
        return 1.0 / (1.0 + np.exp(-h[:, 0]))


def to_onnx(net: Network, doc: str = ""):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    acts = net.layer_activations()
    for a in (net.activation, *acts):
        if a not in ACTIVATIONS:
            raise ConvertError(f"activation {a!r} not supported; use one of {ACTIVATIONS}")
    f32 = np.float32
    inits = [
        numpy_helper.from_array(net.mean.astype(f32), "input_mean"),
        numpy_helper.from_array(net.scale.astype(f32), "input_scale"),
    ]
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "input_mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "input_scale"], ["h0"]),
    ]
    h = "h0"
    last = len(net.weights) - 1
    for i, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        inits += [
            numpy_helper.from_array(w.astype(f32), f"dense{i}_weight"),
            numpy_helper.from_array(b.astype(f32), f"dense{i}_bias"),
        ]
        out = "logit" if i == last else f"dense{i}"
        nodes.append(
            helper.make_node("Gemm", [h, f"dense{i}_weight", f"dense{i}_bias"], [out], transB=1)
        )
        if i < last:
            act = "Relu" if acts[i] == "relu" else "Tanh"
            nodes.append(helper.make_node(act, [out], [f"act{i}"]))
            out = f"act{i}"
        h = out
    nodes.append(helper.make_node("Sigmoid", [h], [OUTPUT_NAME]))
    n_in = int(net.mean.size)
    graph = helper.make_graph(
        nodes,
        net.name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="calmcue",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    if net.feature_names:
        helper.set_model_props(model, {"feature_order": ",".join(net.feature_names)})
    onnx.checker.check_model(model, full_check=True)
    return model


# ---- ONNX -> compact ------------------------------------------------------------------------

OP_DENSE, OP_ADD, OP_MUL, OP_RELU, OP_TANH, OP_SIGMOID = 1, 2, 3, 4, 5, 6
_UNARY = {"Relu": OP_RELU, "Tanh": OP_TANH, "Sigmoid": OP_SIGMOID}


def onnx_to_layers(model) -> tuple[int, list[tuple[int, np.ndarray | None, np.ndarray | None]]]:
    """Walk the graph from its single input to its single output as a chain of layers."""
    from onnx import numpy_helper

    g = model.graph
    consts = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t).astype(np.float64)
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ConvertError("the device runtime needs exactly one input and one output")
    dims = inputs[0].type.tensor_type.shape.dim
    n_in = int(dims[-1].dim_value)
    current = inputs[0].name
    layers: list[tuple[int, np.ndarray | None, np.ndarray | None]] = []
    pending = [n for n in g.node if n.op_type != "Constant"]
    while pending:
        users = [n for n in pending if current in n.input]
        if len(users) != 1:
            raise ConvertError(
                f"tensor {current!r} feeds {len(users)} nodes; only chains are supported"
            )
        node = users[0]
        pending.remove(node)
        others = [consts[n] for n in node.input if n != current and n]
        op = node.op_type
        if op == "Gemm":
            attrs = {a.name: a for a in node.attribute}
            if attrs.get("transA") and attrs["transA"].i:
                raise ConvertError("Gemm with transA is not supported")
            alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
            beta = attrs["beta"].f if "beta" in attrs else 1.0
            w = others[0] if attrs.get("transB") and attrs["transB"].i else others[0].T
            b = others[1] * beta if len(others) > 1 else np.zeros(w.shape[0])
            layers.append((OP_DENSE, w * alpha, np.broadcast_to(b, (w.shape[0],)).copy()))
        elif op == "MatMul":
            w = others[0].T
            layers.append((OP_DENSE, w, np.zeros(w.shape[0])))
        elif op in ("Add", "Sub", "Mul", "Div"):
            v = others[0].reshape(-1)
            if node.input[0] != current and op in ("Sub", "Div"):
                raise ConvertError(f"{op} with the constant first is not supported")
            if op == "Add" and layers and layers[-1][0] == OP_DENSE and layers[-1][2] is not None:
                # MatMul + Add = dense with bias
                d, dw, db = layers[-1]
                assert db is not None
                layers[-1] = (d, dw, db + v)
            elif op in ("Add", "Sub"):
                layers.append((OP_ADD, v if op == "Add" else -v, None))
            else:
                layers.append((OP_MUL, v if op == "Mul" else 1.0 / v, None))
        elif op in _UNARY:
            layers.append((_UNARY[op], None, None))
        else:
            raise ConvertError(
                f"operator {op} is not supported by firmware/core/nnrt.py "
                f"(supported: Gemm, MatMul, Add, Sub, Mul, Div, Relu, Tanh, Sigmoid)"
            )
        current = node.output[0]
    if current != g.output[0].name:
        raise ConvertError("the chain does not end at the graph output")
    return n_in, layers


def to_compact(model, name: str = "stress") -> bytes:
    """ONNX model (object or path) -> bytes of the compact form read by firmware/core/nnrt.py."""
    import onnx

    if isinstance(model, str | Path):
        model = onnx.load(str(model))
    n_in, layers = onnx_to_layers(model)
    width = n_in
    body = b""
    for op, a, b in layers:
        if op == OP_DENSE:
            assert a is not None and b is not None
            if a.shape[1] != width:
                raise ConvertError(f"dense layer expects {a.shape[1]} inputs, has {width}")
            width = a.shape[0]
            body += struct.pack("<BHH", op, a.shape[0], a.shape[1])
            body += a.astype("<f4").tobytes() + b.astype("<f4").tobytes()
        elif op in (OP_ADD, OP_MUL):
            assert a is not None
            v = np.broadcast_to(a, (width,))
            body += struct.pack("<BHH", op, width, 0) + v.astype("<f4").tobytes()
        else:
            body += struct.pack("<BHH", op, width, 0)
    tag = name.encode()[:255]
    head = b"CCM1" + struct.pack("<HHBB", n_in, width, len(layers), len(tag)) + tag
    return head + body


def convert(onnx_path: str | Path, out_path: str | Path, name: str = "stress") -> Path:
    out = Path(out_path)
    out.write_bytes(to_compact(onnx_path, name))
    return out


def merge_ensemble(nets: list[Network], weights: list[float] | None = None) -> Network:
    """K networks of one shape (same input standardisation) -> one wider network whose output
    is the sigmoid of their mean logit (or of their `weights`-weighted sum): first layers
    stacked, hidden layers block-diagonal, the last layer averaged. Exact, and still only
    Gemm/Tanh/Relu/Sigmoid for the device."""
    from scipy.linalg import block_diag

    first = nets[0]
    if any(
        not np.allclose(n.mean, first.mean) or not np.allclose(n.scale, first.scale) for n in nets
    ):
        raise ValueError("ensemble members must share their input standardisation")
    k = len(nets)
    depth = len(first.weights)
    weights_out: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    for i in range(depth):
        ws = [n.weights[i] for n in nets]
        bs = [n.biases[i] for n in nets]
        if i == depth - 1 and weights is not None:
            c = [float(x) for x in weights]
            if len(c) != k:
                raise ValueError(f"{len(c)} weights for {k} ensemble members")
            w = np.hstack([wi * ci for wi, ci in zip(ws, c, strict=True)])
            if depth == 1:
                w = np.sum([wi * ci for wi, ci in zip(ws, c, strict=True)], axis=0)
            weights_out.append(w)
            biases.append(np.sum([bi * ci for bi, ci in zip(bs, c, strict=True)], axis=0))
        elif i == depth - 1:
            w = np.hstack(ws) / k if depth > 1 else np.mean(ws, axis=0)
            weights_out.append(w)
            biases.append(np.mean(bs, axis=0))
        elif i == 0:
            weights_out.append(np.vstack(ws))
            biases.append(np.concatenate(bs))
        else:
            weights_out.append(block_diag(*ws))
            biases.append(np.concatenate(bs))
    return Network(first.mean, first.scale, weights_out, biases, first.activation, first.name)


def merge_min(
    heads: list[list[Network]], weights: tuple[float, float] = (0.5, 0.5), softness: float = 1.0
) -> Network:
    """Two heads (each a list of ensemble members of one shape, one input standardisation) ->
    one network whose logit is `wa*a + wb*b - softness*|a - b|/2`, a and b the heads' mean
    member logits: softness 0 is their weighted mean (merge_ensemble), 1 with equal weights
    is min(a, b), so a window scores high only when both heads call it stressed.

    Still a chain the device runs: the stacked hidden layers, then the two head logits mixed
    into (a - b, b - a, m, -m) with m = wa*a + wb*b, a Relu, and one dense row
    (-softness/2, -softness/2, 1, -1): |a - b| = relu(a - b) + relu(b - a), and
    m = relu(m) - relu(-m) exactly."""
    if len(heads) != 2 or any(not h for h in heads):
        raise ValueError("merge_min needs two heads with at least one member each")
    members = [m for h in heads for m in h]
    if len(members[0].weights) < 2:
        raise ValueError("merge_min needs members with a hidden layer")
    stacked = merge_ensemble(members)
    # Per-head logits from the last hidden layer: each member's output row in its own block.
    width = [m.weights[-1].shape[1] for m in members]
    last = np.zeros((2, sum(width)))
    bias = np.zeros(2)
    col = 0
    for h, head in enumerate(heads):
        for m in head:
            n = m.weights[-1].shape[1]
            last[h, col : col + n] = m.weights[-1][0] / len(head)
            bias[h] += float(m.biases[-1][0]) / len(head)
            col += n
    wa, wb = (float(w) for w in weights)
    mix = np.array([[1.0, -1.0], [-1.0, 1.0], [wa, wb], [-wa, -wb]])
    out = np.array([[-softness / 2, -softness / 2, 1.0, -1.0]])
    first = members[0]
    acts = stacked.layer_activations() + ("relu",)
    return Network(
        first.mean,
        first.scale,
        [*stacked.weights[:-1], mix @ last, out],
        [*stacked.biases[:-1], mix @ bias, np.zeros(1)],
        first.activation,
        first.name,
        activations=acts,
    )
