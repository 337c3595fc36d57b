"""`calmcue companion ...` commands."""

from __future__ import annotations

import argparse
import os
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
        "--mqtt",
        help="mqtt://[user:pass@]host:port, mqtts://... (TLS), or 'embedded' for a private broker",
    )
    s.add_argument(
        "--amqp",
        help="the clustered broker: its nodes' AMQP URLs, comma-separated (docs/cluster.md); "
        "--mqtt then lists their MQTT URLs",
    )
    s.add_argument("--mqtt-ca", help="mqtts: CA file that signed the broker's certificate")
    s.add_argument("--mqtt-cert", help="mqtts: client certificate file (optional)")
    s.add_argument("--mqtt-key", help="mqtts: client certificate's private key file")
    s.add_argument("--data-dir", help="where the companion keeps its secret and keys (default var)")
    s.add_argument("--host", help="listen address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="listen port (default 8000)")
    s.add_argument("--env", choices=("demo", "development", "production"), help="access mode")
    s.set_defaults(func=_serve)

    pg = csub.add_parser("purge", help="delete events older than the retention period now")
    pg.add_argument(
        "--days", type=int, help="retention in days (default CALMCUE_RETENTION_DAYS or 90)"
    )
    pg.add_argument("--db", help="SQLAlchemy URL (default from CALMCUE_DB_URL)")
    pg.set_defaults(func=_purge)

    u = csub.add_parser("user", help="manage dashboard/API users")
    usub = u.add_subparsers(dest="user_command", metavar="COMMAND", required=True)
    add = usub.add_parser(
        "add",
        help="add a user (password from CALMCUE_NEW_PASSWORD or a prompt)",
    )
    add.add_argument("username")
    add.add_argument("--role", choices=("admin", "it", "manager"), required=True)
    add.add_argument("--sites", default="", help="comma-separated sites (managers only)")
    add.add_argument("--db", help="SQLAlchemy URL (default from CALMCUE_DB_URL)")
    add.set_defaults(func=_user_add)
    tok = usub.add_parser("token", help="print a new API bearer token for a user")
    tok.add_argument("username")
    tok.add_argument("--name", default="cli")
    tok.add_argument("--db", help="SQLAlchemy URL (default from CALMCUE_DB_URL)")
    tok.set_defaults(func=_user_token)


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from companion.config import Settings
    from companion.server import serve

    overrides = {
        k: v
        for k, v in {
            "db_url": args.db,
            "mqtt_url": args.mqtt,
            "amqp_urls": args.amqp,
            "host": args.host,
            "port": args.port,
            "env": args.env,
            "mqtt_ca_file": args.mqtt_ca,
            "mqtt_cert_file": args.mqtt_cert,
            "mqtt_key_file": args.mqtt_key,
            "data_dir": args.data_dir,
        }.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            print(f"calmcue companion serve: {err['msg']}", file=sys.stderr)
        return 2
    from companion.config import SettingsError

    try:
        serve(settings)
    except SettingsError as exc:
        print(f"calmcue companion serve: {exc}", file=sys.stderr)
        return 2
    return 0


def _engine(db: str | None):  # type: ignore[no-untyped-def]
    from companion.config import Settings
    from companion.db import make_engine, migrate

    engine = make_engine(db or Settings().db_url)
    migrate(engine)
    return engine


def _user_add(args: argparse.Namespace) -> int:
    import getpass

    from companion import users

    password = os.environ.get("CALMCUE_NEW_PASSWORD") or getpass.getpass(
        f"password for {args.username}: "
    )
    sites = [x.strip() for x in args.sites.split(",") if x.strip()]
    try:
        users.create_user(
            _engine(args.db), username=args.username, password=password, role=args.role, sites=sites
        )
    except users.UserError as exc:
        print(f"calmcue companion user add: {exc}", file=sys.stderr)
        return 2
    print(f"added {args.role} {args.username}" + (f" for {', '.join(sites)}" if sites else ""))
    return 0


def _user_token(args: argparse.Namespace) -> int:
    from companion import users

    try:
        print(users.create_token(_engine(args.db), args.username, args.name))
    except users.UserError as exc:
        print(f"calmcue companion user token: {exc}", file=sys.stderr)
        return 2
    return 0


def _purge(args: argparse.Namespace) -> int:
    from companion.config import Settings
    from companion.ops import purge

    days = args.days or Settings().retention_days
    gone = purge(_engine(args.db), days)
    print(f"purged (older than {days} days): " + ", ".join(f"{v} {k}" for k, v in gone.items()))
    return 0
