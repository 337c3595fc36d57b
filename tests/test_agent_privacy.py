"""Audio stays in RAM: whatever the Pi agent does, no file it writes holds PCM, queued rows
hold schema fields only, and the ALSA capture path never opens a file for writing. Also the
microphone-loss path: telemetry says so, the LED shows the fault, capture is retried."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from agent_support import (
    RunningAgent,
    agent_config,
    silence,
    speechlike,
    tiny_model,
    wait_until,
    write_wav,
)
from gpiozero.pins.mock import MockFactory, MockPWMPin

from firmware.core import events, wire
from firmware.pi.agent import Agent

# --- what the process touches: a Python audit hook (cannot be removed, so it is gated) --------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_log: list[tuple[str, tuple]] = []
_WATCHED = frozenset(("open", "sqlite3.connect", "subprocess.Popen"))


class _Recording:
    """A plain flag: the hook below runs for every audit event of the whole test session."""

    on = False

    def set(self) -> None:
        self.on = True

    def clear(self) -> None:
        self.on = False


_recording = _Recording()
_hooked = False


def _hook(event: str, args: tuple) -> None:
    if _recording.on and event in _WATCHED:
        _log.append((event, args))


@pytest.fixture
def audit():
    global _hooked
    if not _hooked:  # installed on first use (it cannot be removed again)
        sys.addaudithook(_hook)
        _hooked = True
    _log.clear()
    _recording.set()
    yield _log
    _recording.clear()


def written_paths(log) -> set[Path]:
    out = set()
    for event, args in log:
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            if writes and isinstance(path, (str, bytes, os.PathLike)):
                out.add(Path(os.fsdecode(path)).resolve())
        elif event == "sqlite3.connect":
            out.add(Path(os.fsdecode(args[0])).resolve())
    return out


# --- finding PCM in a file ------------------------------------------------------------------

RUN = 8  # samples: 16 bytes of the source in a row would be a leak


def pcm_keys(pcm: np.ndarray) -> set[bytes]:
    """Every RUN-sample run of the source that is clearly audio (not silence, not a constant)."""
    raw = pcm.astype("<i2")
    keys = set()
    for i in range(0, len(raw) - RUN):
        w = raw[i : i + RUN]
        if int(np.abs(w).max()) > 200 and len(set(w.tolist())) > 4:
            keys.add(w.tobytes())
    return keys


def pcm_runs(blob: bytes, keys: set[bytes]) -> int:
    n = RUN * 2
    return sum(1 for i in range(len(blob) - n + 1) if blob[i : i + n] in keys)


def source_pcm(path: Path) -> np.ndarray:
    data, _ = sf.read(str(path), dtype="int16")
    return data


# --- the tests ------------------------------------------------------------------------------


def test_replay_writes_no_audio_and_queues_schema_fields_only(tmp_path, audit):
    (tmp_path / "in").mkdir()
    wav = write_wav(tmp_path / "in" / "talk.wav",
                    [silence(0.5), speechlike(3, False, 1), speechlike(6, True, 2), silence(3)])
    keys = pcm_keys(source_pcm(wav))
    assert pcm_runs(wav.read_bytes(), keys) > 10_000  # the detector finds audio where it is
    model = tiny_model(tmp_path / "model")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    audit.clear()  # from here on, only the agent's doing
    cfg = agent_config(
        tmp_path, 1,  # no broker: every event stays queued on disk, where we can read it
        policy={"conversation_gap_s": 2.0, "stress_from_unknown": True},
        model={"path": str(model)},
    )
    agent = Agent(cfg, source=f"file:{wav}", realtime=False)
    assert agent.run(drain_s=0.2) == 0
    _recording.clear()

    touched = {p for p in tmp_path.rglob("*") if p.is_file() and before.get(p) != p.stat().st_mtime_ns}
    touched |= {p for p in written_paths(audit) if p.is_file()}
    assert touched, "the agent wrote its queue somewhere"
    assert all(p.is_relative_to(tmp_path / "state") for p in touched), touched
    for path in touched:
        assert pcm_runs(path.read_bytes(), keys) == 0, f"{path} holds audio"

    with sqlite3.connect(tmp_path / "state" / "queue.db") as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        rows = con.execute("SELECT topic, payload FROM outbox ORDER BY id").fetchall()
    assert tables <= {"outbox", "state", "sqlite_sequence"}
    assert len(rows) >= 3
    for topic, payload in rows:
        event = wire.decode(payload)  # the closed schema: nothing but its own fields
        assert topic == wire.event_topic(event)
        assert len(payload) <= events.MAX_BYTES


FAKE_ARECORD = """#!{python}
# A stand-in microphone: the raw PCM of a recording on stdout, then the USB mic is unplugged
# and stays away (later starts fail at once, like arecord without its device).
import os, sys, time
pcm = os.environ["FAKE_MIC_PCM"]
gone = pcm + ".unplugged"
if not os.path.exists(gone):
    sys.stdout.buffer.write(open(pcm, "rb").read())
    sys.stdout.flush()
    time.sleep(0.05)
    open(gone, "w").close()
sys.stderr.write("arecord: main:850: audio open error: No such device\\n")
sys.exit(1)
"""


def test_alsa_capture_never_opens_a_file_for_writing_and_survives_unplugging(tmp_path, audit,
                                                                            monkeypatch):
    pcm = (speechlike(2, True, 5) * 32767).astype("<i2")
    mic = tmp_path / "mic" / "pcm.raw"  # the fake microphone's own data, not the agent's
    mic.parent.mkdir()
    mic.write_bytes(pcm.tobytes())
    fake = tmp_path / "bin" / "arecord"
    fake.parent.mkdir()
    fake.write_text(FAKE_ARECORD.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MIC_PCM", str(mic))

    factory = MockFactory(pin_class=MockPWMPin)
    audit.clear()  # from here on, only the agent's doing
    cfg = agent_config(tmp_path, 1, outputs={"enabled": True},
                       audio={"retry_min_s": 0.2, "retry_max_s": 0.4})
    agent = Agent(cfg, source="alsa:hw:1,0", pin_factory=factory)
    with RunningAgent(agent):
        assert wait_until(lambda: agent.pipeline.windows > 0, 10)  # audio flowed
        assert wait_until(lambda: agent.mic_error is not None, 10)
        tele = agent.telemetry()
        assert tele["mic_ok"] is False and "No such device" in tele["mic_error"]
        assert wait_until(lambda: agent.outputs.playing == "fault", 3)
        popens = lambda: [a for e, a in audit if e == "subprocess.Popen"]  # noqa: E731
        assert wait_until(lambda: len(popens()) >= 3, 10)  # retried, with backoff
    _recording.clear()

    for _exe, argv, _cwd, _env in popens():
        argv = [os.fsdecode(a) for a in argv]
        assert Path(argv[0]).name == "arecord"
        # hw:1,0 opened through ALSA's plug layer, which converts the card's rate to 16 kHz
        assert argv[argv.index("-D") + 1] == "plughw:1,0" and "-t" in argv
        assert not [a for a in argv[1:] if "/" in a], f"arecord given a file: {argv}"
    writes = written_paths(audit) - {Path(os.devnull)}  # arecord's stdin
    assert writes == {(tmp_path / "state" / "queue.db").resolve()}, writes
    red, blue = factory.pin(17).states, factory.pin(22).states
    assert max(float(s.state) for s in red) > 0 and len(red) == len(blue)  # magenta fault blink
    assert len(json.dumps(tele)) < 1024  # plain JSON, within what the companion takes


class _FakeStream:
    """sounddevice.RawInputStream over an in-memory recording; then the device disappears."""

    pcm = b""

    def __init__(self, samplerate, channels, dtype, device, blocksize):
        assert (samplerate, channels, dtype) == (16000, 1, "int16")
        self.device, self.pos = device, 0

    def start(self):
        pass

    def read(self, frames):
        if self.pos >= len(self.pcm):
            raise RuntimeError("Error reading from the input stream: Device unavailable [-9988]")
        data = self.pcm[self.pos : self.pos + 2 * frames]
        self.pos += 2 * frames
        return data, False

    def stop(self):
        pass

    def close(self):
        pass


def test_sounddevice_capture_never_opens_a_file_for_writing(tmp_path, audit, monkeypatch):
    import types

    _FakeStream.pcm = (speechlike(2, True, 6) * 32767).astype("<i2").tobytes()
    monkeypatch.setitem(sys.modules, "sounddevice", types.SimpleNamespace(RawInputStream=_FakeStream))
    monkeypatch.setenv("PATH", str(tmp_path))  # no arecord here: PortAudio it is
    audit.clear()
    cfg = agent_config(tmp_path, 1, audio={"retry_min_s": 0.2, "retry_max_s": 0.4})
    agent = Agent(cfg, source="alsa:hw:2,0")
    with RunningAgent(agent):
        assert wait_until(lambda: agent.pipeline.windows >= 4, 10)
        err = wait_until(lambda: agent.mic_error, 10)
        assert err and "Device unavailable" in err
    _recording.clear()
    assert not [a for e, a in audit if e == "subprocess.Popen"]
    writes = written_paths(audit)
    assert writes == {(tmp_path / "state" / "queue.db").resolve()}, writes
