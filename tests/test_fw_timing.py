"""The S3 timing model's inputs and the hardware smoke test, on this machine: the instruction
counts come from valgrind on the real unix port, and the smoke test's on-board code runs on the
unix port with the host fakes (there is no board here; on one it runs over the serial REPL)."""

from __future__ import annotations

import json
import subprocess

from fw_harness import REPO

from calmcue.mpy import interpreter
from firmware.tools import smoke_headset, timing_model


def test_timing_model_counts_instructions_per_audio_second():
    r = timing_model.measure(seconds=4)
    ips = r["instr_per_audio_s"]
    print(json.dumps(r))
    # docs/firmware.md "Timing": ~28 M instructions per audio second, features ~11 M of it.
    assert 3e6 < ips["features"] < ips["pipeline"] < 100e6
    lo, hi = r["rtf"]["240MHz"]
    assert 0 < lo < hi < 1  # the model says the S3 keeps up at 240 MHz


def test_smoke_test_code_runs_on_the_firmware(host_build, headset_wav, tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "device.json").write_text(json.dumps({
        "site": "demo", "device": "headset-1", "wifi": {"ssid": "store", "password": "x" * 8},
        "mqtt": {"host": "127.0.0.1", "port": 1883}}))  # fmt: skip
    prelude = (
        "import sys\n"
        f"sys.path[:0] = [{str(host_build / 'host')!r}, {str(host_build)!r}]\n"
        f"import machine\nmachine.wav = [{str(headset_wav)!r}, True, False]\n"
    )
    code = prelude + smoke_headset.device_code(seconds=3, root=str(flash) + "/")
    proc = subprocess.run([*interpreter(), "-X", "heapsize=160K", "-c", code],
                          capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    r = smoke_headset.parse(proc.stdout + proc.stderr)
    print(smoke_headset.summary(r))
    assert r["audio_s"] == 3 and r["mic_ok"] and r["mic_peak"] > 1000
    assert 0 < r["rtf"] < 0.5 and r["hop_max_ms"] > 0 and r["heap_free"] > 0
    assert r["wifi_connect_ms"] is not None and r["tls_handshake_ms"] is None  # plain mqtt
    assert r["freq_mhz"] == 240 and r["wifi_pm"] == 2  # main.hardware(): clock, power save
