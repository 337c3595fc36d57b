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
import struct
from array import array
from math import exp

try:
    import micropython
    from micropython import const
except ImportError:  # CPython: the decorators are plain functions

    class micropython:  # noqa: N801
        @staticmethod
        def native(f):
            return f

    def const(x):
        return x


MAGIC = b"CCM1"
OP_DENSE = const(1)
OP_ADD = const(2)
OP_MUL = const(3)
OP_RELU = const(4)
OP_TANH = const(5)
OP_SIGMOID = const(6)
OP_NAMES = {1: "dense", 2: "add", 3: "mul", 4: "relu", 5: "tanh", 6: "sigmoid"}


class ModelError(ValueError):
    pass


@micropython.native
def _dense(w, b, x, y, n_in, n_out):
    k = 0
    for j in range(n_out):
        s = b[j]
        for i in range(n_in):
            s += w[k] * x[i]
            k += 1
        y[j] = s


@micropython.native
def _add(v, x, n):
    for i in range(n):
        x[i] += v[i]


@micropython.native
def _mul(v, x, n):
    for i in range(n):
        x[i] *= v[i]


@micropython.native
def _relu(x, n):
    for i in range(n):
        if x[i] < 0.0:
            x[i] = 0.0


def _sigmoid(x, n):
    for i in range(n):
        v = x[i]
        # split by sign so exp() never overflows
        if v >= 0.0:
            x[i] = 1.0 / (1.0 + exp(-v))
        else:
            e = exp(v)
            x[i] = e / (1.0 + e)


def _tanh(x, n):
    for i in range(n):
        v = x[i]
        if v > 20.0:
            x[i] = 1.0
        elif v < -20.0:
            x[i] = -1.0
        else:
            e = exp(2.0 * v)
            x[i] = (e - 1.0) / (e + 1.0)


class Model:
    """A loaded compact model. `run(features)` -> output array (reused between calls)."""

    def __init__(self, data):
        if data[:4] != MAGIC:
            raise ModelError("not a calmcue compact model (expected CCM1 header)")
        n_in, n_out, n_layers, n_name = struct.unpack_from("<HHBB", data, 4)
        pos = 10
        self.name = str(data[pos : pos + n_name], "utf-8")
        pos += n_name
        self.n_in = n_in
        self.n_out = n_out
        self.layers = []
        width = n_in
        widest = n_in
        for _ in range(n_layers):
            if pos + 5 > len(data):
                raise ModelError("compact model is truncated")
            op, rows, cols = struct.unpack_from("<BHH", data, pos)
            pos += 5
            need = 4 * rows * (cols + 1) if op == OP_DENSE else 4 * rows
            if op <= OP_MUL and pos + need > len(data):
                raise ModelError("compact model is truncated")
            if op == OP_DENSE:
                if cols != width:
                    raise ModelError(f"dense layer expects {cols} inputs, has {width}")
                w = array("f", data[pos : pos + 4 * rows * cols])
                pos += 4 * rows * cols
                b = array("f", data[pos : pos + 4 * rows])
                pos += 4 * rows
                self.layers.append((op, rows, cols, w, b))
                width = rows
                widest = max(widest, rows)
            elif op == OP_ADD or op == OP_MUL:
                if rows != width:
                    raise ModelError(f"{OP_NAMES[op]} over {rows} values, input has {width}")
                self.layers.append((op, rows, 0, array("f", data[pos : pos + 4 * rows]), None))
                pos += 4 * rows
            elif op in OP_NAMES:
                self.layers.append((op, width, 0, None, None))
            else:
                raise ModelError(f"unknown operator code {op}")
        if width != n_out or pos != len(data):
            raise ModelError("compact model is truncated or inconsistent")
        # Two ping-pong buffers as wide as the widest layer.
        self._a = array("f", bytes(4 * widest))
        self._b = array("f", bytes(4 * widest))
        self._out = array("f", bytes(4 * n_out))

    def run(self, features):
        """Stress model output for one feature vector (len n_in)."""
        if len(features) != self.n_in:
            raise ModelError(f"model needs {self.n_in} features, got {len(features)}")
        x = self._a
        y = self._b
        for i in range(self.n_in):
            x[i] = features[i]
        width = self.n_in
        for op, rows, cols, w, b in self.layers:
            if op == OP_DENSE:
                _dense(w, b, x, y, cols, rows)
                x, y = y, x
                width = rows
            elif op == OP_ADD:
                _add(w, x, rows)
            elif op == OP_MUL:
                _mul(w, x, rows)
            elif op == OP_RELU:
                _relu(x, width)
            elif op == OP_SIGMOID:
                _sigmoid(x, width)
            else:
                _tanh(x, width)
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
