"""Helpers for the Pi agent tests (tests/test_agent_*.py): a recording MQTT subscriber, agent
configs, synthetic speech-like audio, and a running-agent context."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import soundfile as sf
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
DEMO_WAV = REPO / "calmcue" / "data" / "demo_conversation.wav"


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


class Subscriber:
    """Records every message under calmcue/v1/#. `persistent=True` keeps a broker-side session
    (clean_session False, QoS 1), like the companion, so nothing is missed across its reconnects."""

    def __init__(self, port: int, topic: str = "calmcue/v1/#", persistent: bool = False):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.topic = topic
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{time.monotonic_ns()}" if persistent else "",
            clean_session=not persistent,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        assert self._subscribed.wait(5), "test subscriber could not subscribe"

    def _on_connect(self, client, userdata, flags, reason, props):
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, suffix: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if "/evt/" in t]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def agent_config(tmp_path: Path, port: int, **sections: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "site": "store-1",
        "device": "counter-1",
        "state_dir": str(tmp_path / "state"),
        "mqtt": {
            "url": f"mqtt://127.0.0.1:{port}",
            "telemetry_s": 0.5,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
        },
        "outputs": {"enabled": False, "button_bounce_s": 0.0},  # mock pins do not bounce
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def speechlike(seconds: float, loud: bool, seed: int = 0) -> np.ndarray:
    """Noise shaped like syllables (4-6 per second); `loud` = louder, faster, more varied."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    rate = 5.5 if loud else 3.5
    env = np.clip(np.sin(2 * np.pi * rate * t + rng.uniform(0, 6)), 0, None) ** 2
    swing = (1.0 + 2.5 * rng.random(int(seconds * rate) + 2))[(t * rate).astype(int)]
    amp = (0.25 * swing if loud else 0.03) * env
    voice = np.sin(2 * np.pi * (220 if loud else 130) * t) + 0.3 * rng.standard_normal(n)
    return np.clip(amp * voice, -1, 1).astype(np.float32)


def write_wav(path: Path, parts: list[np.ndarray]) -> Path:
    sf.write(str(path), np.concatenate(parts), 16000, subtype="PCM_16")
    return path


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), dtype=np.float32)


class RunningAgent:
    """An Agent running in a background thread, stopped (and joined) on exit."""

    def __init__(self, agent: Any):
        self.agent = agent
        self.stop = threading.Event()
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(agent.run(self.stop)))

    def __enter__(self) -> RunningAgent:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "agent did not stop"


def tiny_model(folder: Path) -> Path:
    """A small stand-in stress model in the shipped format (models.export.to_onnx + stress.json):
    the score rises with voice pitch (`speechlike(loud=True)` is pitched well above the calm
    voice). Lets the agent tests run the real onnxruntime path whatever model is checked in."""
    from models.export import Network, to_onnx
    from models.features import FEATURE_NAMES

    n = len(FEATURE_NAMES)
    w = np.zeros((1, n))
    w[0, FEATURE_NAMES.index("f0_st")] = 0.35  # calm voice ~4.6 st -> 0.18, raised ~13.7 -> 0.84
    net = Network(
        mean=np.zeros(n),
        scale=np.ones(n),
        weights=[w],
        biases=[np.array([-3.15])],
        feature_names=tuple(FEATURE_NAMES),
        name="tiny",
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "stress.onnx"
    path.write_bytes(to_onnx(net).SerializeToString())
    (folder / "stress.json").write_text(json.dumps({"threshold": 0.6, "model_id": "test-tiny"}))
    return path
