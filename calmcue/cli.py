"""The one console entry point, `calmcue`. Each area registers its own subcommands from a light
module (argparse only), so `calmcue --help` starts fast and imports nothing heavy."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from calmcue import __version__

# Modules with `register(subparsers)`; each sets `func` on its parsers (a callable taking args
# and returning an exit code) and imports its heavy dependencies only inside that callable.
COMMAND_MODULES = (
    "calmcue.demo",
    "companion.cli",
    "firmware.pi.cli",
    "models.cli",
    "firmware.tools.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calmcue",
        description="On-device vocal-stress cues for front-line staff, and their companion service.",
    )
    parser.add_argument("--version", action="version", version=f"calmcue {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
