"""`calmcue run`: the demo on embedded defaults.

One process starts a private Mosquitto broker, the companion (FastAPI + SQLite file, demo mode:
no login) and one simulated counter device — the Pi agent replaying the bundled synthetic
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
    from calmcue.broker import BrokerError, Mosquitto
    from companion.config import Settings
    from companion.server import start
    from firmware.pi.agent import Agent, demo_config

    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    try:
        broker = Mosquitto().start()
    except BrokerError as exc:
        log.error("%s", exc)
        return 1
    log.info("embedded MQTT broker on %s", broker.url)
    stop = threading.Event()
    companion = None
    device_thread = None
    try:
        try:
            companion = start(
                Settings(
                    env="demo",
                    db_url=f"sqlite:///{data / 'calmcue.db'}",
                    mqtt_url=broker.url,
                    host=args.host,
                    port=args.port,
                )
            )
        except (RuntimeError, OSError) as exc:
            log.error("%s (is port %d already in use? try --port)", exc, args.port)
            return 1
        agent = Agent(demo_config(broker.url, data / "device", site=args.site, device=args.device))
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


def _wait_for_signal(stop: threading.Event) -> None:
    """Block until SIGINT/SIGTERM (or `stop` is set elsewhere)."""

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop.wait(0.5):
        pass
