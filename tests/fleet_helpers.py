"""Shared pieces of the fleet tests (test_fleet_*.py): a small firmware bundle, a simulated board
and a fleet store on SQLite."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# A bundle as `make firmware` lays it out: files + manifest.json with SHA-256 per file. Real
# device modules, plus a main.py that proves the loader ran the active slot.
MAIN_PY = b"""# test bundle entry
import sys
RUNNING_FROM = sys.path[0]
"""


def make_bundle(root: Path, version: str = "1.0.0", main: bytes = MAIN_PY,
                extra: dict[str, bytes] | None = None) -> Path:
    files = {
        "main.py": main,
        "firmware/__init__.py": b"",
        "firmware/events.py": (REPO / "firmware" / "events.py").read_bytes(),
        "firmware/ota.py": (REPO / "firmware" / "ota.py").read_bytes(),
        **(extra or {}),
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    manifest = {
        "version": version,
        "files": {rel: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
                  for rel, d in files.items()},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()
