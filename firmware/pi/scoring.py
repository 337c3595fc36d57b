"""Window features and stress score for the Pi agent: the numpy reference front end
(`models.features`, streaming) and the shipped model (`models/stress.onnx`) in one onnxruntime
session, built once, one thread, CPU only. Pure: no clock, no I/O after the model is loaded."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "models" / "stress.onnx"
log = logging.getLogger("calmcue.agent.scoring")


class ModelError(RuntimeError):
    pass


class FrontEnd(Protocol):
    def process(self, chunk: np.ndarray) -> list[dict[str, Any]]: ...

    def reset(self) -> None: ...


class Scorer(Protocol):
    model_id: str
    model_hash: str
    threshold: float | None

    def score(self, features: np.ndarray) -> float: ...


class OnnxScorer:
    """The shipped stress model: one onnxruntime session, built once, one thread, CPU only."""

    def __init__(self, path: str | Path):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise ModelError(
                "onnxruntime is not installed; install it with 'pip install onnxruntime'"
            ) from exc
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(
                f"model file {self.path} not found; run 'make model' or set model.path"
            )
        blob = self.path.read_bytes()
        # models/stress.json (written by `calmcue model export`): id and calibrated threshold
        meta_path = self.path.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self.threshold: float | None = float(meta["threshold"]) if "threshold" in meta else None
        digest = hashlib.sha256(blob).hexdigest()
        expected = meta.get("onnx_sha256")
        if expected and expected != digest:
            raise ModelError(
                f"{self.path} does not match {meta_path.name} (sha256 {digest[:16]}…, expected "
                f"{str(expected)[:16]}…): a partial copy or a mixed-up update; reinstall both "
                "files from the same 'calmcue model export'"
            )
        if isinstance(meta.get("feature_order"), list):
            self.check_order(tuple(meta["feature_order"]))
        self.model_hash = digest[:16]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
        info = self._session.get_modelmeta()
        props = info.custom_metadata_map or {}
        self.model_id = str(
            meta.get("model_id") or props.get("model_id") or info.graph_name or self.path.stem
        )
        order = props.get("feature_order")
        if order:
            self.check_order(tuple(order.split(",")))
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        self._width = inp.shape[-1] if isinstance(inp.shape[-1], int) else None
        self._output = self._pick_output()

    def _pick_output(self) -> str:
        # Prefer a float tensor of probabilities over a label output (skl2onnx emits both).
        outs = self._session.get_outputs()
        for o in outs:
            if "tensor(float" in o.type and "prob" in o.name.lower():
                return o.name
        for o in outs:
            if "tensor(float" in o.type:
                return o.name
        raise ModelError(
            f"{self.path}: no float tensor output (got {[o.type for o in outs]}); "
            "export with zipmap disabled"
        )

    @staticmethod
    def check_order(order: tuple[str, ...]) -> None:
        try:
            from models.features import FEATURE_NAMES
        except ImportError:
            return
        if order != tuple(FEATURE_NAMES):
            raise ModelError(
                "the model was trained on a different feature order than models/features.py "
                "computes; re-export it ('calmcue model export') with this version"
            )

    @property
    def width(self) -> int | None:
        return self._width

    def score(self, features: np.ndarray) -> float:
        x = np.asarray(features, dtype=np.float32).reshape(1, -1)
        (y,) = self._session.run([self._output], {self._input: x})
        y = np.asarray(y, dtype=np.float32).reshape(-1)
        value = float(y[1] if y.size == 2 else y[0])
        return min(1.0, max(0.0, value))


class _RecordFrontEnd:
    """models.features.FeatureExtractor with its records as plain dicts."""

    def __init__(self) -> None:
        from models.features import FeatureExtractor

        self._fx = FeatureExtractor()

    def process(self, chunk: np.ndarray) -> list[dict[str, Any]]:
        return [
            {
                "t": r.t,
                "speech": r.speech,
                "level_db": r.level_db,
                "f0_hz": r.f0_hz,
                "rate": r.rate,
                "features": r.features,
            }
            for r in self._fx.process(chunk)
        ]

    def new_conversation(self) -> None:
        self._fx.new_conversation()

    def reset(self) -> None:
        self._fx.reset()


def make_front_end() -> tuple[FrontEnd, str]:
    """The numpy reference extractor (models.features), the model's own front end."""
    try:
        return _RecordFrontEnd(), "models.features"
    except ImportError as exc:
        raise ModelError(
            "models/features.py is missing from this install; reinstall calmcue"
        ) from exc


def make_scorer(path: str) -> Scorer:
    model = Path(path) if path else DEFAULT_MODEL
    if not model.is_file():
        raise ModelError(
            f"model file {model} not found; reinstall calmcue (it ships models/stress.onnx), "
            "run 'make model', or set model.path"
        )
    return OnnxScorer(model)
