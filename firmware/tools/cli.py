"""`calmcue device ...`: IT bench and fleet tools."""

from __future__ import annotations

from calmcue._pending import pending


def register(sub) -> None:
    p = sub.add_parser("device", help="IT: flash, provision, register, update, list devices")
    dsub = p.add_subparsers(dest="device_command", metavar="COMMAND", required=True)
    for name in ("flash", "provision", "register", "update", "list", "status"):
        dsub.add_parser(name).set_defaults(func=pending(f"device {name}", 9))
