"""`calmcue run`: the demo on embedded defaults.

One process starts a private Mosquitto broker (no anonymous clients: generated passwords for the
companion and the simulated device, which may publish only under its own topics), the companion
(FastAPI + SQLite file, demo mode: no login, read-only outside the demo) and one simulated
counter device — the Pi agent replaying the bundled synthetic
conversation (calm → agitated → calm) in real time, in a loop — and serves the dashboard until
Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

log = logging.getLogger("calmcue.demo")

DEFAULT_DATA_DIR = "var/demo"
ENROLMENT_WAV = Path(__file__).resolve().parent / "data" / "demo_staff_enrolment.wav"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="the demo: embedded broker, companion and a simulated counter device",
        description="Start the demo: an embedded MQTT broker, the companion with a SQLite file, "
        "and one simulated counter device replaying a bundled conversation. "
        "Open the dashboard at http://HOST:PORT/.",
    )
    p.add_argument("--host", default="127.0.0.1", help="dashboard address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="dashboard port (default 8000)")
    p.add_argument(
        "--data-dir",
        default=os.environ.get("CALMCUE_DATA_DIR", DEFAULT_DATA_DIR),
        help=f"where the demo keeps its database and device queue (default {DEFAULT_DATA_DIR})",
    )
    p.add_argument("--site", default="demo", help="site id of the simulated device")
    p.add_argument("--device", default="counter-1", help="device id of the simulated device")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calmcue.shared.broker import BrokerError, authenticated
    from companion.config import Settings
    from companion.server import start
    from firmware.pi.agent import Agent

    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    try:
        # durable: its persistence (the companion's session, queued events) lives in the data dir
        broker, creds = authenticated([(args.site, args.device)], workdir=data / "mqtt")
        broker.start()
    except (BrokerError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    log.info("embedded MQTT broker on %s (password accounts only)", broker.url)
    stop = threading.Event()
    companion = None
    device_thread = None
    try:
        try:
            companion = start(
                Settings(
                    env="demo",
                    db_url=f"sqlite:///{data / 'calmcue.db'}",
                    data_dir=data,
                    mqtt_url=creds.url("companion"),
                    host=args.host,
                    port=args.port,
                )
            )
        except (RuntimeError, OSError) as exc:
            log.error("%s (is port %d already in use? try --port)", exc, args.port)
            return 1
        agent = Agent(
            demo_device_config(creds.url(args.device), data / "device", args.site, args.device)
        )
        enrol_staff_voice(agent, ENROLMENT_WAV)
        device_thread = threading.Thread(
            target=agent.run, args=(stop,), name="calmcue-sim-device", daemon=True
        )
        device_thread.start()
        print(
            f"calmcue demo running: dashboard on {companion.url}/  (API: {companion.url}/api/events)\n"
            f"simulated device {args.site}/{args.device} is replaying a 70 s conversation; "
            "the first cues appear about 30 s in. Ctrl-C stops.",
            flush=True,
        )
        _wait_for_signal(stop)
        return 0
    finally:
        stop.set()
        if device_thread is not None:
            device_thread.join(15)
        if companion is not None:
            companion.stop()
        broker.close()


def demo_device_config(mqtt_url: str, state_dir: Path, site: str, device: str) -> dict:
    """The simulated counter: the agent's demo settings, in counter mode as a store would run it
    (the staff voice is enrolled at shift start, so only the customer's stress can cue)."""
    from firmware.pi.agent import demo_config

    cfg = demo_config(mqtt_url, state_dir, site=site, device=device)
    cfg["policy"] = {"attribution": "counter"}
    return cfg


def enrol_staff_voice(agent: object, wav: Path) -> None:
    """Shift start: feed the staff member's enrolment recording through the agent's pipeline,
    as holding the button would. Raises RuntimeError if it did not complete."""
    import numpy as np
    import soundfile as sf

    from firmware.pi.agent import CHUNK

    pipeline = agent.pipeline  # type: ignore[attr-defined]
    err = pipeline.start_enrolment()
    if err:
        raise RuntimeError(err)
    samples, sr = sf.read(str(wav), dtype="int16")
    if sr != 16000:
        raise RuntimeError(f"{wav} is {sr} Hz; the enrolment clip must be 16 kHz")
    for i in range(0, len(samples), CHUNK):
        pipeline.process(np.ascontiguousarray(samples[i : i + CHUNK]))
        if not pipeline.enrolling:
            break
    else:
        raise RuntimeError(f"{wav} was too short to learn the staff voice")
    pipeline.reset()  # the enrolment is not part of a conversation; the learnt profile stays
    log.info("staff voice enrolled from %s (kept in RAM only)", wav.name)


def _wait_for_signal(stop: threading.Event) -> None:
    """Block until SIGINT/SIGTERM (or `stop` is set elsewhere)."""

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop.wait(0.5):
        pass
