"""Marks a command whose implementation has not landed yet: it says so and exits with 2."""

from __future__ import annotations

import argparse
import sys


def pending(what: str, issue: int):
    def run(args: argparse.Namespace) -> int:
        print(f"calmcue {what}: not available in this build yet (tracked in issue {issue})", file=sys.stderr)
        return 2

    return run
