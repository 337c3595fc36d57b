"""`calmcue agent`: the Raspberry Pi edge agent."""

from __future__ import annotations

from calmcue._pending import pending


def register(sub) -> None:
    p = sub.add_parser("agent", help="the Raspberry Pi edge agent")
    p.set_defaults(func=pending("agent", 6))
