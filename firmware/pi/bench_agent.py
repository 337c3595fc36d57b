"""Pi agent benchmark (`make bench`): processing real-time factor on one core.

What is timed is everything the agent does per 0.25 s chunk of audio apart from waiting for the
microphone: numpy features, the onnxruntime session (1 thread), speaker attribution, the cue
policy, stamping and queueing events in SQLite. The process is pinned to one CPU and the CPU time
of that work is divided by the duration of the audio (target: RTF <= 0.02). The audio is the
bundled demo conversation, replayed --fast; no broker (the MQTT thread only idles).
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from firmware.pi.agent import CHUNK, Agent
from firmware.pi.audio import RATE, read_audio
from firmware.pi.config import build
from firmware.pi.scoring import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "calmcue" / "data" / "demo_conversation.wav"
TARGET_RTF = 0.02


def _stand_in_model(folder: Path) -> Path:
    """Same shape as the shipped model (standardise + small MLP + sigmoid) when it is absent."""
    import numpy as np

    from models.export import Network, to_onnx
    from models.features import FEATURE_NAMES

    rng = np.random.default_rng(0)
    n = len(FEATURE_NAMES)
    net = Network(
        mean=np.zeros(n),
        scale=np.ones(n),
        weights=[
            rng.normal(0, 0.3, (32, n)),
            rng.normal(0, 0.3, (16, 32)),
            rng.normal(0, 0.3, (1, 16)),
        ],
        biases=[np.zeros(32), np.zeros(16), np.zeros(1)],
        feature_names=tuple(FEATURE_NAMES),
        name="bench-stand-in",
    )
    path = folder / "stress.onnx"
    path.write_bytes(to_onnx(net).SerializeToString())
    return path


def main(repeats: int = 3) -> dict[str, Any]:
    logging.getLogger("calmcue.agent").setLevel(logging.ERROR)
    try:
        before = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return _run(repeats, None)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})  # one core, as on a busy Pi
    try:
        return _run(repeats, cpu)
    finally:
        os.sched_setaffinity(0, before)  # the other benchmarks in this process get them back


def _run(repeats: int, pinned: int | None) -> dict[str, Any]:
    pcm = read_audio(DEMO)
    audio_s = len(pcm) // CHUNK * CHUNK / RATE
    with tempfile.TemporaryDirectory(prefix="calmcue-bench-") as tmp:
        model = DEFAULT_MODEL if DEFAULT_MODEL.is_file() else _stand_in_model(Path(tmp))
        cpu_runs, wall_runs, per_chunk_ms = [], [], []
        events = 0
        for i in range(repeats):
            cfg = build(
                {
                    "site": "bench",
                    "device": "pi",
                    "state_dir": f"{tmp}/state{i}",
                    "mqtt": {"url": "mqtt://127.0.0.1:1", "reconnect_min_s": 60},
                    "model": {"path": str(model)},
                    "outputs": {"enabled": False},
                    "policy": {"attribution": "none", "stress_from_unknown": True},
                }
            )
            agent = Agent(cfg, source=f"file:{DEMO}", realtime=False)
            chunks = [pcm[j : j + CHUNK] for j in range(0, len(pcm) - CHUNK + 1, CHUNK)]
            c0, w0 = time.process_time(), time.perf_counter()
            for chunk in chunks:
                t = time.perf_counter()
                events += len(agent.process(chunk))
                per_chunk_ms.append((time.perf_counter() - t) * 1e3)
            cpu_runs.append(time.process_time() - c0)
            wall_runs.append(time.perf_counter() - w0)
            scorer = agent.pipeline.scorer
            front_end = agent.pipeline.front_end_name
            agent.close()
    rtf = min(cpu_runs) / audio_s
    per_chunk_ms.sort()
    out = {
        "audio_s": round(audio_s, 2),
        "rtf_cpu_one_core": round(rtf, 5),
        "rtf_wall": round(min(wall_runs) / audio_s, 5),
        "target_rtf": TARGET_RTF,
        "meets_target": rtf <= TARGET_RTF,
        "chunk_ms_median": round(statistics.median(per_chunk_ms), 3),
        "chunk_ms_p99": round(per_chunk_ms[int(0.99 * (len(per_chunk_ms) - 1))], 3),
        "chunk_budget_ms": CHUNK / RATE * 1e3,
        "events_per_run": events // repeats,
        "model": scorer.model_id,
        "model_hash": scorer.model_hash,
        "front_end": front_end,
        "pinned_cpu": pinned,
        "repeats": repeats,
    }
    for k, v in out.items():
        print(f"   {k}: {v}")
    return out


if __name__ == "__main__":
    main()
