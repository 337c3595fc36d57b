"""`calmcue companion ...` commands."""

from __future__ import annotations

from calmcue._pending import pending


def register(sub) -> None:
    p = sub.add_parser("companion", help="the companion service")
    csub = p.add_subparsers(dest="companion_command", metavar="COMMAND", required=True)
    s = csub.add_parser("serve", help="serve the companion (API, dashboard, MQTT ingest)")
    s.set_defaults(func=pending("companion serve", 2))
