"""`calmcue score FILE...`: score audio files as the device would, one JSON line per file.

Engines:
- onnxruntime: the numpy reference front end + models/stress.onnx (what the Pi runs);
- micropython: firmware/core/features.py + firmware/core/nnrt.py + models/stress.ccm inside the real
  MicroPython unix port (what the ESP32 runs). The audio is streamed to it over stdin as raw
  PCM, never through a file.

Clip score = the mean window score over speech windows (see models/train.py clip_score).
A window with less speech than the cue policy's gate (`min_speech`, 0.4 s of its 1 s) has no
stress score: it is reported as `"score": null` with its `speech` fraction, because the device
does not judge pauses and noise either. A file without any such speech scores null.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.dataset import AudioError, read_audio

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "models"
ENGINES = ("onnxruntime", "micropython")
# The cue policy's speech gate (firmware/core/cue_settings.py min_speech): windows below it are pauses.
WINDOW_SPEECH_MIN = 0.4


class ScoringError(RuntimeError):
    pass


@dataclass(frozen=True)
class ShippedModel:
    onnx_path: Path
    ccm_path: Path
    threshold: float
    speech_min: float
    model_id: str


def shipped(model_dir: Path = MODEL_DIR) -> ShippedModel:
    meta_path = model_dir / "stress.json"
    if not meta_path.exists():
        raise ScoringError(
            f"{meta_path} not found; run 'make model' (or 'calmcue model export') to produce it"
        )
    meta = json.loads(meta_path.read_text())
    return ShippedModel(
        model_dir / "stress.onnx",
        model_dir / "stress.ccm",
        float(meta["threshold"]),
        float(meta["speech_min"]),
        str(meta["model_id"]),
    )


class OnnxScorer:
    """numpy front end + onnxruntime (one session, one thread, CPU)."""

    def __init__(self, model: ShippedModel) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ScoringError(
                "onnxruntime is missing; install it with 'pip install onnxruntime'"
            ) from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model.onnx_path), opts, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name
        self.model = model

    def window_scores(self, features: np.ndarray) -> np.ndarray:
        if features.shape[0] == 0:
            return np.zeros(0)
        out = self.session.run(None, {self.input: features.astype(np.float32)})[0]
        return out[:, 0].astype(np.float64)

    def score_pcm(self, pcm: np.ndarray) -> dict:
        from models import features as fe

        feats, records = fe.extract(pcm)
        scores = self.window_scores(feats)
        speech = np.array([r.speech for r in records])
        return report(scores, speech, [r.t for r in records], self.model.speech_min)


def report(scores, speech, times, speech_min: float) -> dict:
    """The JSON of one file: clip score (null without speech) and every window with its speech
    fraction and its score (null for a pause)."""
    sp = np.asarray(speech, np.float64)
    sc = np.asarray(scores, np.float64)
    clip = None
    if sc.size and (sp >= speech_min).any():
        clip = round(float(np.mean(sc[sp >= speech_min])), 4)
    return {
        "score": clip,
        "windows": [
            {
                "t": round(float(t), 3),
                "speech": round(float(p), 3),
                "score": round(float(s), 4) if p >= WINDOW_SPEECH_MIN else None,
            }
            for t, p, s in zip(times, sp, sc, strict=True)
        ],
    }


def score_files(paths: Iterable[str], engine: str = "onnxruntime") -> Iterator[dict]:
    """One result dict per path, in order; unreadable files give {"path", "error"}."""
    if engine not in ENGINES:
        raise ScoringError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    model = shipped()
    if engine == "onnxruntime":
        scorer = OnnxScorer(model)
        for p in paths:
            try:
                pcm = read_audio(p)
            except AudioError as exc:
                yield {"path": p, "error": str(exc)}
                continue
            yield {"path": p, **scorer.score_pcm(pcm)}
    else:
        yield from _score_micropython(list(paths), model)


# ---- MicroPython engine ----------------------------------------------------------------------------

_MPY_SCRIPT = REPO / "firmware" / "host" / "score_stdin.py"


def _score_micropython(paths: list[str], model: ShippedModel, batch: int = 500) -> Iterator[dict]:
    """Streams decoded audio of up to `batch` files into one MicroPython process at a time."""
    import struct
    import subprocess

    from calmcue.shared import mpy

    search = [str(REPO)]
    prelude = "import sys\n" + "".join(f"sys.path.insert(0, {p!r})\n" for p in reversed(search))
    prelude += f"sys.argv[1:] = {[str(model.ccm_path), repr(model.speech_min)]!r}\n"
    code = prelude + _MPY_SCRIPT.read_text()
    for start in range(0, len(paths), batch):
        part = paths[start : start + batch]
        stream: list[bytes] = []
        errors: dict[int, str] = {}
        for k, p in enumerate(part):
            try:
                pcm = read_audio(p)
            except AudioError as exc:
                errors[k] = str(exc)
                continue
            stream += [b"PCM0", struct.pack("<I", pcm.size), pcm.astype("<i2").tobytes()]
        stream.append(b"PCM0" + struct.pack("<I", 0))
        results: list[dict] = []
        if len(errors) < len(part):
            try:
                cmd = [*mpy.interpreter(), "-X", "heapsize=256K", "-c", code]
            except mpy.MicroPythonError as exc:
                raise ScoringError(str(exc)) from None
            proc = subprocess.run(
                cmd,
                input=b"".join(stream),
                capture_output=True,
                timeout=900,
            )
            if proc.returncode != 0:
                raise ScoringError(
                    "MicroPython scoring failed:\n"
                    + proc.stdout.decode(errors="replace")[-2000:]
                    + proc.stderr.decode(errors="replace")[-2000:]
                )
            results = [
                json.loads(x) for x in proc.stdout.decode().splitlines() if x.startswith("{")
            ]
        ok = iter(results)
        for k, p in enumerate(part):
            if k in errors:
                yield {"path": p, "error": errors[k]}
            else:
                res = next(ok)  # MicroPython dicts are unordered: same key order as onnxruntime
                ws = res["windows"]
                yield {
                    "path": p,
                    **report(
                        [w["score"] for w in ws],
                        [w["speech"] for w in ws],
                        [w["t"] for w in ws],
                        model.speech_min,
                    ),
                }
