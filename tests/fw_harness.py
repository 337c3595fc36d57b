"""Helpers for the headset firmware tests: the host runner as a subprocess of the real
MicroPython unix port, and an MQTT collector on the real Mosquitto."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from calmcue.mpy import interpreter
from calmcue.shared import romport

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "firmware" / "host" / "runner.py"
DEMO_WAV = REPO / "calmcue" / "data" / "demo_conversation.wav"


def runner_cmd(build: Path, flash: Path, wav: Path, port: int, *extra: str, heap: str = "112K",
               rom: Path | None = None):  # fmt: skip
    """`rom`: run from that ROMFS image of the build (calmcue.shared.romport maps it outside the heap,
    the runner mounts it at /rom) instead of the build folder."""
    where = ["--rom"] if rom is not None else ["--build", str(build)]
    return [
        *(romport.interpreter(rom) if rom is not None else interpreter()),
        "-X",
        f"heapsize={heap}",
        str(RUNNER),
        *where,
        "--flash",
        str(flash),
        "--wav",
        str(wav),
        "--mqtt-port",
        str(port),
        *extra,
    ]


def run_through(build, flash, wav, port, *extra, heap="112K", timeout=120, rom=None) -> list[dict]:
    """Play straight through; returns the JSON lines. Fails with the output on a crash."""
    proc = subprocess.run(
        runner_cmd(build, flash, wav, port, *extra, heap=heap, rom=rom),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"runner failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


class Device:
    """The runner in --control mode: send a command, get the lines up to its state line."""

    def __init__(self, build, flash, wav, port, heap="112K", rom=None):
        self.proc = subprocess.Popen(
            runner_cmd(build, flash, wav, port, "--control", heap=heap, rom=rom),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict] = []
        self.boot = self._read_until("boot")[-1]

    def _read_until(self, key: str) -> list[dict]:
        got = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read()
                raise AssertionError(f"runner exited: {err[-3000:]}\nlast lines: {self.lines[-5:]}")
            if not line.startswith("{"):
                rest = line + self.proc.stdout.read() + self.proc.stderr.read()
                raise AssertionError(
                    f"runner failed:\n{rest[-3000:]}\nlast lines: {self.lines[-5:]}"
                )
            obj = json.loads(line)
            self.lines.append(obj)
            got.append(obj)
            if key in obj:
                return got

    def cmd(self, text: str) -> dict:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self._read_until("state")[-1]["state"]

    def events(self) -> list[dict]:
        return [x["evt"] for x in self.lines if "evt" in x]

    def pump(self) -> None:
        self.cmd("audio 0.1")

    def kill(self) -> None:
        """Power cut: no goodbye to the broker, nothing flushed beyond what is on flash."""
        self.proc.kill()
        self.proc.wait(5)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(10)


class Collector:
    """Subscribes to everything under calmcue/v1 with QoS 1; resubscribes after a reconnect."""

    def __init__(self, port: int):
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.all: list[tuple[str, bytes, bool]] = []
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fw-test-collector")
        self.client.on_connect = self._on_connect
        # "connected" means subscribed (SUBACK seen), so nothing the device sends is missed.
        self.client.on_subscribe = lambda *a: self.connected.set()
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload, m.retain))
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(10), "collector could not connect to mosquitto"

    def _on_connect(self, client, userdata, flags, rc, props=None):
        client.subscribe("calmcue/v1/#", qos=1)

    def wait_disconnected(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.connected.is_set():
            assert time.monotonic() < deadline, "collector did not notice the broker going away"
            time.sleep(0.02)

    def drain(self, wait: float = 0.3) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + wait
        while True:
            try:
                self.all.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return self.all

    def wait_for(self, pred, timeout: float = 10, pump=None) -> tuple[str, bytes, bool]:
        """The first message matching pred. `pump()` (e.g. a Device stepping 0.1 s of audio) is
        called while waiting: the firmware only reads the broker when it runs, and it runs
        much faster than real time."""
        deadline = time.monotonic() + timeout
        for m in self.all:
            if pred(m):
                return m
        while time.monotonic() < deadline:
            if pump is not None:
                pump()
            try:
                m = self.messages.get(timeout=0.05 if pump is not None else 0.1)
            except queue.Empty:
                continue
            self.all.append(m)
            if pred(m):
                return m
        raise AssertionError(
            f"no matching message within {timeout} s; got {[x[0] for x in self.all]}"
        )

    def events(self) -> list[dict]:
        return [json.loads(p) for t, p, _ in self.all if "/evt/" in t]

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
