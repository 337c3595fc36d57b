"""`calmcue companion ...` commands."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:  # type: ignore[no-untyped-def]
    p = sub.add_parser("companion", help="the companion service")
    csub = p.add_subparsers(dest="companion_command", metavar="COMMAND", required=True)
    s = csub.add_parser(
        "serve",
        help="serve the companion (API, dashboard, MQTT ingest)",
        description="Settings not given here come from CALMCUE_* environment variables.",
    )
    s.add_argument(
        "--db", help="SQLAlchemy URL (default sqlite:///var/calmcue.db; postgresql+psycopg://...)"
    )
    s.add_argument(
        "--mqtt", help="mqtt://[user:pass@]host:port, or 'embedded' for a private broker"
    )
    s.add_argument("--host", help="listen address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="listen port (default 8000)")
    s.add_argument("--env", choices=("demo", "development", "production"), help="access mode")
    s.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from companion.config import Settings
    from companion.server import serve

    overrides = {
        k: v
        for k, v in {
            "db_url": args.db,
            "mqtt_url": args.mqtt,
            "host": args.host,
            "port": args.port,
            "env": args.env,
        }.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            print(f"calmcue companion serve: {err['msg']}", file=sys.stderr)
        return 2
    serve(settings)
    return 0
