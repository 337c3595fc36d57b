"""`calmcue agent`: the Raspberry Pi edge agent."""

from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
from pathlib import Path


def run_agent(args: argparse.Namespace) -> int:
    import threading

    from firmware.pi.agent import Agent
    from firmware.pi.config import ConfigError, load, parse_source
    from firmware.pi.scoring import ModelError

    try:
        cfg = load(args.config)
        kind, detail = parse_source(args.source or cfg.audio.source)
        if kind == "file" and not Path(detail).is_file():
            raise ValueError(f"{detail} does not exist; give a WAV or FLAC file after file:")
    except (ConfigError, ValueError) as exc:
        print(f"calmcue agent: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: ok (site {cfg.site}, device {cfg.device}, {cfg.mqtt.url})")
        return 0
    stop = threading.Event()
    # systemd stops us with SIGTERM: finish the chunk, say offline, close the queue cleanly.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        agent = Agent(cfg, source=args.source, realtime=args.realtime)
    except ModelError as exc:
        print(f"calmcue agent: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        print(
            f"calmcue agent: cannot open the event queue at {cfg.queue_path}: {exc}; "
            "the service user must be able to write state_dir (install.sh sets this up)",
            file=sys.stderr,
        )
        return 2
    return agent.run(stop)


def register(sub) -> None:
    p = sub.add_parser(
        "agent",
        help="the Raspberry Pi edge agent",
        description="Listen (ALSA microphone or a WAV/FLAC replay), score vocal stress on the "
        "device, drive the LED/motor and send cue events over MQTT with store-and-forward.",
    )
    p.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="agent settings, TOML or JSON (see firmware/pi/agent.example.toml)",
    )
    p.add_argument(
        "--source",
        metavar="SOURCE",
        help="alsa, alsa:DEVICE (e.g. alsa:hw:1,0) or file:PATH; overrides audio.source",
    )
    p.add_argument(
        "--realtime",
        dest="realtime",
        action="store_true",
        default=None,
        help="replay a file at the speed it was recorded (default for files)",
    )
    p.add_argument(
        "--fast",
        dest="realtime",
        action="store_false",
        help="replay a file as fast as the pipeline runs",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the config file and exit (0 = ok, 2 = problems listed)",
    )
    p.set_defaults(func=run_agent)
