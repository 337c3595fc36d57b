"""`calmcue score` and `calmcue model ...`."""

from __future__ import annotations

from calmcue._pending import pending


def register(sub) -> None:
    p = sub.add_parser("score", help="score audio files as the device would (one JSON line each)")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=pending("score", 4))
    m = sub.add_parser("model", help="train, evaluate and export the stress model")
    msub = m.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    for name in ("train", "evaluate", "export"):
        msub.add_parser(name).set_defaults(func=pending(f"model {name}", 4))
