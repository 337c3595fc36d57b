# Pure-MicroPython runtime for the stress model in its compact form (.ccm), which
# models/convert.py makes from the ONNX file. Runs on MicroPython and CPython.
#
# Only what the stress model uses: a chain of layers over one feature vector
# (dense = Gemm/MatMul+Add, per-feature add/mul = input standardisation, relu, tanh, sigmoid).
# Buffers are allocated once at load, so scoring a window allocates nothing but float results.
#
# File layout (little-endian): b"CCM1", u16 n_in, u16 n_out, u8 n_layers, u8 len + model id
# (utf-8); per layer: u8 op, u16 rows, u16 cols, then float32 data
#   DENSE: rows*cols weights (row = one output) + rows biases; ADD/MUL: rows values; others: none.
#
# Heap: the layer table is one flat list and the forward pass one native function (native
# code is not kept on the MicroPython heap), so the runtime adds little beyond the weights.
import struct
from array import array
from math import exp

try:
    import micropython
    from micropython import const
except ImportError:  # CPython: no native emitter (the decorator returns the function as is)
    import types

    micropython = types.SimpleNamespace(native=lambda f: f)  # type: ignore[assignment]
    const = int  # type: ignore[assignment,misc]

_DENSE = const(1)
_ADD = const(2)
_MUL = const(3)
_RELU = const(4)
_TANH = const(5)
_SIGMOID = const(6)


class ModelError(ValueError):
    pass


@micropython.native
def _forward(layers, x, y):
    # The layer chain over x (the input in its first entries), y the other ping-pong buffer;
    # returns the buffer that holds the output. layers: op, rows, cols, w, b per layer.
    # Int constants where the float result is the same: no boxed float constants.
    i = 0
    n = len(layers)
    while i < n:
        op = layers[i]
        rows = layers[i + 1]
        w = layers[i + 3]
        if op == _DENSE:
            cols = layers[i + 2]
            b = layers[i + 4]
            k = 0
            for j in range(rows):
                s = b[j]
                for c in range(cols):
                    s += w[k] * x[c]
                    k += 1
                y[j] = s
            x, y = y, x
        elif op == _ADD:
            for j in range(rows):
                x[j] += w[j]
        elif op == _MUL:
            for j in range(rows):
                x[j] *= w[j]
        elif op == _RELU:
            for j in range(rows):
                if x[j] < 0:
                    x[j] = 0
        elif op == _SIGMOID:
            for j in range(rows):
                v = x[j]
                # split by sign so exp() never overflows
                if v >= 0:
                    x[j] = 1 / (1 + exp(-v))
                else:
                    e = exp(v)
                    x[j] = e / (1 + e)
        else:
            for j in range(rows):
                v = x[j]
                if v > 20:
                    x[j] = 1
                elif v < -20:
                    x[j] = -1
                else:
                    e = exp(2 * v)
                    x[j] = (e - 1) / (e + 1)
        i += 5
    return x


class Model:
    """A loaded compact model. `run(features)` -> output array (reused between calls)."""

    def __init__(self, data):
        if data[:4] != b"CCM1":
            raise ModelError("not a calmcue compact model (expected CCM1 header)")
        n_in, n_out, n_layers, n_name = struct.unpack_from("<HHBB", data, 4)
        pos = 10
        self.name = str(data[pos : pos + n_name], "utf-8")
        pos += n_name
        self.n_in = n_in
        self.n_out = n_out
        layers = [None] * (5 * n_layers)
        width = n_in
        widest = n_in
        for i in range(0, 5 * n_layers, 5):
            if pos + 5 > len(data):
                raise ModelError("compact model is truncated")
            op, rows, cols = struct.unpack_from("<BHH", data, pos)
            pos += 5
            need = 4 * rows * (cols + 1) if op == _DENSE else 4 * rows
            if op <= _MUL and pos + need > len(data):
                raise ModelError("compact model is truncated")
            w = b = None
            if op == _DENSE:
                if cols != width:
                    raise ModelError(f"dense layer expects {cols} inputs, has {width}")
                w = array("f", data[pos : pos + 4 * rows * cols])
                pos += 4 * rows * cols
                b = array("f", data[pos : pos + 4 * rows])
                pos += 4 * rows
                width = rows
                widest = max(widest, rows)
            elif op == _ADD or op == _MUL:
                if rows != width:
                    name = "add" if op == _ADD else "mul"
                    raise ModelError(f"{name} over {rows} values, input has {width}")
                w = array("f", data[pos : pos + 4 * rows])
                pos += 4 * rows
            elif _RELU <= op <= _SIGMOID:
                rows = width
            else:
                raise ModelError(f"unknown operator code {op}")
            layers[i] = op
            layers[i + 1] = rows
            layers[i + 2] = cols
            layers[i + 3] = w
            layers[i + 4] = b
        if width != n_out or pos != len(data):
            raise ModelError("compact model is truncated or inconsistent")
        self.layers = layers
        # Two ping-pong buffers as wide as the widest layer.
        self._a = array("f", bytes(4 * widest))
        self._b = array("f", bytes(4 * widest))
        self._out = array("f", bytes(4 * n_out))

    @micropython.native  # the hot path, and native code is not kept on the heap
    def run(self, features):
        """Stress model output for one feature vector (len n_in)."""
        if len(features) != self.n_in:
            raise ModelError(f"model needs {self.n_in} features, got {len(features)}")
        x = self._a
        for i in range(self.n_in):
            x[i] = features[i]
        x = _forward(self.layers, x, self._b)
        out = self._out
        for i in range(self.n_out):
            out[i] = x[i]
        return out

    def score(self, features):
        """The stress score 0..1 of one window (first output)."""
        return self.run(features)[0]


def load(path):
    with open(path, "rb") as f:
        return Model(f.read())
