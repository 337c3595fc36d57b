"""Audio sources: 16 kHz mono int16 chunks, held in RAM only.

- `ArecordSource`: ALSA capture through an `arecord` child process writing raw PCM to a pipe.
- `SounddeviceSource`: ALSA capture through PortAudio (`sounddevice`), when installed.
- `FileSource`: replays a WAV/FLAC recording, paced in real time or as fast as possible.

Privacy: no source ever opens a file for writing; the capture paths hand their samples from the
sound card to the pipeline through a pipe or a callback buffer, never through storage.
"""

from __future__ import annotations

import logging
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from firmware.pi.config import parse_source

RATE = 16000
log = logging.getLogger("calmcue.agent.audio")
# A capture that delivers nothing for this long while still running is dead (a USB mic gone
# quiet, a wedged driver): the source raises MicError and the agent restarts it.
STALL_S = 3.0
# After this much audio, a sound card delivering much more than 16 kHz is recording at another
# rate (arecord on a hw: device that cannot do 16 kHz): refuse rather than misread it.
RATE_CHECK_S = 2.0
_OVERRUN = re.compile(rb"overrun!!! \(at least ([0-9.]+) ms long\)")
_RATE_WARNING = re.compile(rb"rate is not accurate \(requested = (\d+)Hz, got = (\d+)Hz\)")


class MicError(RuntimeError):
    """The microphone is missing, unplugged or stopped delivering audio."""


class AudioSource(Protocol):
    name: str

    def chunks(self) -> Iterator[np.ndarray]:
        """Yield int16 arrays of `chunk` samples until the source ends; raise MicError on loss."""
        ...

    def close(self) -> None: ...


class ArecordSource:
    """`arecord -t raw` on a pipe: available on every Raspberry Pi OS image, nothing to install.

    Reads never wait longer than `stall_s` (select on the pipe): a capture that stops delivering
    without exiting raises MicError instead of hanging the agent. arecord's warnings are read
    (it runs without -q): "rate is not accurate" means the card records at another rate and is
    refused with the fix; "overrun" adds to `lost_s` (audio the card dropped because we fell
    behind). A `hw:X,Y` device is opened as `plughw:X,Y`, so ALSA converts the rate and the
    channel count the card really has into 16 kHz mono."""

    def __init__(
        self, device: str = "default", chunk: int = 4000, exe: str = "arecord",
        stall_s: float | None = None,
    ):  # fmt: skip
        self.name = f"alsa:{device}"
        self.device = "plug" + device if device.startswith("hw:") else device
        self.chunk = chunk
        self.exe = exe
        self.stall_s = STALL_S if stall_s is None else stall_s
        self.lost_s = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._err = b""
        self._last_err = ""

    def argv(self) -> list[str]:
        # No file argument: arecord writes to stdout, which is our pipe.
        return [
            self.exe,
            "-D",
            self.device,
            "-f",
            "S16_LE",
            "-r",
            str(RATE),
            "-c",
            "1",
            "-t",
            "raw",
        ]

    def _stderr(self, data: bytes) -> None:
        self._err = (self._err + data)[-4096:]
        while b"\n" in self._err:
            line, self._err = self._err.split(b"\n", 1)
            m = _OVERRUN.search(line)
            if m:
                self.lost_s += float(m.group(1)) / 1000
                log.warning("%s: capture overrun, %s ms of audio lost", self.name, m.group(1).decode())
                continue
            m = _RATE_WARNING.search(line)
            if m:
                raise MicError(
                    f"{self.name} records at {int(m.group(2))} Hz, not {RATE} Hz; use "
                    f"plughw:{self.device.split(':', 1)[-1]} (ALSA converts the rate) or a "
                    "microphone that does 16 kHz"
                )
            if line.strip():
                self._last_err = line.decode(errors="replace").strip()

    def chunks(self) -> Iterator[np.ndarray]:
        exe = shutil.which(self.exe)
        if exe is None:
            raise MicError(
                f"{self.exe} not found; install it with 'apt-get install alsa-utils' "
                "(or install the sounddevice package)"
            )
        self._last_err = ""
        self._proc = proc = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.fileno(), proc.stderr.fileno()
        need = self.chunk * 2
        buf = bytearray()
        started = time.monotonic()
        got = 0  # samples delivered
        try:
            while True:
                heard = time.monotonic()
                while len(buf) < need:
                    ready, _, _ = select.select([out, err], [], [], 0.5)
                    if err in ready:
                        data = os.read(err, 4096)
                        if data:
                            self._stderr(data)
                    if out in ready:
                        data = os.read(out, need - len(buf))
                        if not data:
                            self._ended(proc)
                        buf += data
                        heard = time.monotonic()
                    elif time.monotonic() - heard > self.stall_s:
                        raise MicError(
                            f"{self.name} delivered no audio for {self.stall_s:.0f} s although "
                            "arecord still runs (microphone or driver stalled); restarting the "
                            "capture"
                        )
                chunk = np.frombuffer(bytes(buf[:need]), dtype="<i2").astype(np.int16)
                del buf[:need]
                got += self.chunk
                elapsed = time.monotonic() - started
                if elapsed > RATE_CHECK_S and got > 1.5 * RATE * elapsed + 4 * self.chunk:
                    raise MicError(
                        f"{self.name} delivers {got / elapsed:.0f} samples a second, not {RATE}: "
                        "the card records at another rate; use plughw:X,Y (ALSA converts it)"
                    )
                yield chunk
        finally:
            self.close()

    def _ended(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
        assert proc.stderr is not None
        try:
            self._stderr(proc.stderr.read() + b"\n")
        except (OSError, ValueError):
            pass
        raise MicError(
            f"{self.name} stopped (arecord exit code {proc.returncode}): "
            f"{self._last_err or 'no audio'}; check the microphone is plugged in (arecord -l)"
        )

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2)


class SounddeviceSource:
    """PortAudio capture; blocking reads from a RawInputStream (RAM buffer only)."""

    def __init__(self, device: str = "default", chunk: int = 4000):
        self.name = f"alsa:{device}"
        self.device = None if device == "default" else device
        self.chunk = chunk
        self._stream: Any = None

    def chunks(self) -> Iterator[np.ndarray]:
        import sounddevice as sd

        try:
            self._stream = sd.RawInputStream(
                samplerate=RATE, channels=1, dtype="int16", device=self.device, blocksize=self.chunk
            )
            self._stream.start()
        except Exception as exc:  # PortAudioError or ValueError for an unknown device
            raise MicError(f"{self.name}: cannot open the microphone: {exc}") from exc
        try:
            while True:
                try:
                    data, _overflowed = self._stream.read(self.chunk)
                except Exception as exc:
                    raise MicError(f"{self.name}: capture stopped: {exc}") from exc
                yield np.frombuffer(bytes(data), dtype="<i2").astype(np.int16)
        finally:
            self.close()

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:  # already gone with the device
                pass


def read_audio(path: str | Path) -> np.ndarray:
    """A WAV/FLAC file as 16 kHz mono int16, resampled and mixed down in RAM as needed."""
    try:
        import soundfile as sf
    except (ImportError, OSError) as exc:  # OSError: the wheel's libsndfile did not load
        raise MicError(
            f"replaying {path} needs soundfile ({exc}): pip install 'calmcue[pi]'"
        ) from exc

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise MicError(f"cannot read {path}: {exc}; give a WAV or FLAC file") from exc
    mono = data.mean(axis=1)
    if rate != RATE:
        from math import gcd

        # scipy is not in the Pi's install (40 MB for this one call): a 16 kHz file needs none
        try:
            from scipy.signal import resample_poly
        except ImportError as exc:
            raise MicError(
                f"{path} is {rate} Hz; resampling it to 16 kHz needs scipy "
                "(pip install scipy), or convert it first: sox IN.wav -r 16000 OUT.wav"
            ) from exc

        g = gcd(int(rate), RATE)
        mono = resample_poly(mono, RATE // g, int(rate) // g).astype(np.float32)
    return (np.clip(mono, -1.0, 1.0) * 32767.0).round().astype(np.int16)


class FileSource:
    """Replays a recording as if it were the microphone (the demo's simulated counter)."""

    def __init__(
        self, path: str | Path, chunk: int = 4000, realtime: bool = True, loop: bool = False
    ):
        self.name = f"file:{path}"
        self.path = Path(path)
        self.chunk = chunk
        self.realtime = realtime
        self.loop = loop
        self._closed = False

    def chunks(self) -> Iterator[np.ndarray]:
        if not self.path.is_file():
            raise MicError(f"{self.path} does not exist; give a WAV or FLAC file after file:")
        pcm = read_audio(self.path)
        n = len(pcm) // self.chunk * self.chunk
        if n == 0:
            return
        start = time.monotonic()
        sent = 0
        while not self._closed:
            for i in range(0, n, self.chunk):
                if self._closed:
                    return
                if self.realtime:
                    due = start + sent / RATE
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                sent += self.chunk
                # a copy: the pipeline may keep it, the file buffer stays read-only
                yield pcm[i : i + self.chunk].copy()
            if not self.loop:
                return

    def close(self) -> None:
        self._closed = True


def open_source(
    spec: str, chunk: int = 4000, realtime: bool = True, loop: bool = False
) -> AudioSource:
    kind, detail = parse_source(spec)
    if kind == "file":
        return FileSource(detail, chunk=chunk, realtime=realtime, loop=loop)
    if shutil.which("arecord"):
        return ArecordSource(detail, chunk=chunk)
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        return ArecordSource(detail, chunk=chunk)  # raises MicError with the install hint
    return SounddeviceSource(detail, chunk=chunk)
