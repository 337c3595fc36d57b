"""The Pi agent against a microphone that misbehaves the way real ones do, through a fake
`arecord` on PATH (the real agent code, the real pipes and signals): a capture that goes silent
without exiting, a card that records at another rate, an overrun; plus GPIO that fails and the
systemd watchdog protocol (sd_notify on a real unix datagram socket)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
from agent_support import RunningAgent, agent_config, speechlike, wait_until
from gpiozero.pins.mock import MockFactory, MockPWMPin

from firmware.pi import audio
from firmware.pi.agent import Agent

FAKE_ARECORD = """#!{python}
# A stand-in for arecord. FAKE_MODE:
#   stall    1 s of audio, then nothing, still running (a wedged USB mic or driver)
#   fast     a card stuck at 48 kHz: three times the samples, and arecord's warning unless -q
#   fastq    the same without the warning (what -q hid)
#   overrun  real-time audio, and after 1 s arecord's overrun message
import os, sys, time
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
mode = os.environ["FAKE_MODE"]
pcm = open(os.environ["FAKE_MIC_PCM"], "rb").read()
out = sys.stdout.buffer
rate = 16000
if mode.startswith("fast"):
    rate = 48000
    if mode == "fast" and "-q" not in sys.argv:
        sys.stderr.write("Warning: rate is not accurate (requested = 16000Hz, got = 48000Hz)\\n")
        sys.stderr.write("         please, try the plug plugin\\n")
        sys.stderr.flush()
start, sent, i = time.monotonic(), 0, 0
while True:
    if mode == "stall" and sent >= 16000:
        time.sleep(3600)
    if mode == "overrun" and sent == 16000:
        sys.stderr.write("overrun!!! (at least 250.000 ms long)\\n")
        sys.stderr.flush()
    block = pcm[i:i + 1600 * 2] or pcm[:1600 * 2]
    i = (i + 1600 * 2) % len(pcm)
    out.write(block)
    out.flush()
    sent += 1600
    delay = start + sent / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
"""


@pytest.fixture
def fake_mic(tmp_path, monkeypatch):
    pcm = (speechlike(4, True, 5) * 32767).astype("<i2")
    mic = tmp_path / "mic" / "pcm.raw"
    mic.parent.mkdir()
    mic.write_bytes(pcm.tobytes())
    fake = tmp_path / "bin" / "arecord"
    fake.parent.mkdir()
    fake.write_text(FAKE_ARECORD.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    runs = tmp_path / "mic" / "runs.log"
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MIC_PCM", str(mic))
    monkeypatch.setenv("FAKE_LOG", str(runs))

    def mode(m: str):
        monkeypatch.setenv("FAKE_MODE", m)
        return lambda: runs.read_text().splitlines() if runs.exists() else []

    return mode


def test_silent_capture_is_a_mic_fault_and_is_restarted(tmp_path, fake_mic, monkeypatch):
    """Before: the read waited for ever (mic_error null, no fault LED, SIGTERM ignored)."""
    runs = fake_mic("stall")
    monkeypatch.setattr(audio, "STALL_S", 1.0)
    factory = MockFactory(pin_class=MockPWMPin)
    cfg = agent_config(tmp_path, 1, outputs={"enabled": True},
                       audio={"retry_min_s": 0.2, "retry_max_s": 0.4})  # fmt: skip
    agent = Agent(cfg, source="alsa:hw:1,0", pin_factory=factory)
    running = RunningAgent(agent)
    with running:
        assert wait_until(lambda: agent.pipeline.windows > 0, 10)  # audio flowed first
        assert wait_until(lambda: agent.mic_error is not None, 5)
        assert "delivered no audio for 1 s although arecord still runs" in agent.mic_error
        assert agent.telemetry()["mic_ok"] is False
        assert wait_until(lambda: agent.outputs.playing == "fault", 3)
        assert wait_until(lambda: len(runs()) >= 2, 5)  # the capture was started again
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 3, "the agent took too long to stop during a stall"
    assert all(r.split()[1] == "plughw:1,0" for r in runs())


def test_sigterm_and_systemd_watchdog_during_a_stall(tmp_path, fake_mic):
    """`calmcue agent` as systemd runs it (Type=notify, WatchdogSec): READY=1, WATCHDOG=1 while
    it works (also through a capture stall it recovers from), STOPPING=1 and a prompt exit on
    SIGTERM."""
    fake_mic("stall")
    cfg = agent_config(tmp_path, 1, audio={"source": "alsa:hw:1,0", "retry_min_s": 0.2,
                                           "retry_max_s": 0.4})  # fmt: skip
    (tmp_path / "agent.json").write_text(json.dumps(cfg))
    sock_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sock_path))
    notify.settimeout(0.2)
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="1000000")
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from calmcue.cli import main; sys.exit(main())",
         "agent", "--config", str(tmp_path / "agent.json")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    got: list[tuple[float, str]] = []

    def collect(until: float) -> None:
        while time.monotonic() < until:
            try:
                got.append((time.monotonic(), notify.recv(256).decode()))
            except TimeoutError:
                pass

    try:
        collect(time.monotonic() + 10)  # 1 s of audio, a 3 s stall, a restart, again
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        out, _ = proc.communicate(timeout=15)
        took = time.monotonic() - t0
        collect(time.monotonic() + 0.3)
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    states = [m for _, m in got]
    assert states[0] == "READY=1", states
    pings = [t for t, m in got if m == "WATCHDOG=1"]
    # Every 0.5 s (half of WATCHDOG_USEC) while audio flows; never further apart than a read
    # can wait (audio.STALL_S, 3 s) plus one interval, so WatchdogSec=30 is never reached by a
    # stalled microphone, only by a hung agent; and they went on after the first stall.
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert len(pings) >= 4 and max(gaps) < audio.STALL_S + 1.0, (states, gaps)
    assert pings[-1] - got[0][0] > 2 * audio.STALL_S, states
    assert "STOPPING=1" in states
    assert proc.returncode == 0 and took < 5, (took, out[-2000:])
    assert "delivered no audio for 3 s" in out


@pytest.mark.parametrize("mode", ["fast", "fastq"])
def test_card_at_another_rate_is_refused_with_the_fix(tmp_path, fake_mic, mode):
    """`arecord -q` hid "rate is not accurate": a 48 kHz card was read as 16 kHz."""
    fake_mic(mode)
    cfg = agent_config(tmp_path, 1, audio={"retry_min_s": 5, "retry_max_s": 5})
    agent = Agent(cfg, source="alsa:hw:2,0")
    with RunningAgent(agent):
        assert wait_until(lambda: agent.mic_error is not None, 8)
    err = agent.mic_error
    if mode == "fast":  # arecord said so, now that its warnings are read
        assert "records at 48000 Hz, not 16000 Hz; use plughw:2,0" in err, err
    else:  # measured: three times the samples a second
        assert "samples a second, not 16000" in err and "plughw" in err, err


def test_overrun_counts_lost_audio_in_telemetry(tmp_path, fake_mic):
    fake_mic("overrun")
    agent = Agent(agent_config(tmp_path, 1), source="alsa:hw:1,0")
    with RunningAgent(agent):
        assert wait_until(lambda: getattr(agent._source, "lost_s", 0) > 0, 5)
        tele = agent.telemetry()
    assert tele["audio_lost_s"] == 0.25 and tele["mic_ok"] and tele["chunk_max_ms"] > 0


class _NoGpio:
    """A pin factory for a Pi whose GPIO cannot be opened (no /dev/gpiochip access)."""

    def __getattr__(self, name):
        raise OSError(13, "Permission denied: '/dev/gpiochip0'")


def test_gpio_failure_is_reported_in_telemetry(tmp_path, caplog):
    cfg = agent_config(tmp_path, 1, outputs={"enabled": True})
    agent = Agent(cfg, source="file:" + str(tmp_path / "none.wav"), pin_factory=_NoGpio())
    tele = agent.telemetry()
    agent.close()
    assert tele["outputs_ok"] is False
    assert "Permission denied" in tele["outputs_error"] and "gpio group" in tele["outputs_error"]
    assert "running without outputs" in caplog.text
    quiet = Agent(agent_config(tmp_path / "q", 1), source="file:x.wav")  # outputs off: fine
    assert quiet.telemetry()["outputs_ok"] is True and quiet.telemetry()["outputs_error"] is None
    quiet.close()
