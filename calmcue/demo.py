"""`calmcue run`: the demo (embedded broker, companion, one simulated counter device)."""

from __future__ import annotations

from calmcue._pending import pending


def register(sub) -> None:
    p = sub.add_parser("run", help="the demo: embedded broker, companion and a simulated device")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=pending("run", 2))
