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
        "firmware/core/events.py": (REPO / "firmware" / "core" / "events.py").read_bytes(),
        "firmware/headset/ota.py": (REPO / "firmware" / "headset" / "ota.py").read_bytes(),
        "firmware/headset/tls.py": (REPO / "firmware" / "headset" / "tls.py").read_bytes(),  # for https:// updates
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


class FleetServer:
    """The fleet routers served over real HTTP (uvicorn in a thread) so a device can fetch."""

    def __init__(self, store, certfile: str | None = None, keyfile: str | None = None):
        import threading

        import uvicorn
        from fastapi import FastAPI

        from calmcue.broker import free_port
        from companion import fleet

        app = FastAPI()
        app.include_router(fleet.it_router(store))
        app.include_router(fleet.device_router(store))
        self.port = free_port()
        self.url = f"{'https' if certfile else 'http'}://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", ssl_certfile=certfile,
                                                    ssl_keyfile=keyfile))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "fleet test server did not start"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(5)
