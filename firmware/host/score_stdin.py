# PCM-driven scoring runner for the unix port: scores audio streamed on stdin exactly as the
# device does (firmware/core/features.py -> firmware/core/nnrt.py) and prints one JSON line per clip.
# Used by `calmcue score --engine micropython`; the audio never touches a file.
#
# argv: model.ccm
# stdin: clips, each b"PCM0" + uint32 LE sample count + int16 LE samples (16 kHz mono); a count
# of 0 ends the stream. Each clip is a fresh stream (reset()), fed in 0.25 s chunks.
# stdout per clip: {"id": n, "windows": [{"t", "speech", "score"}, ...]}; the clip score and
# the null scores of pauses are made from these by models/scoring.py report(), as for
# onnxruntime.
import json
import sys

from firmware.core import nnrt
from firmware.core.features import Features

_CHUNK = 4000


def _read_exact(stream, mv, n):
    got = 0
    while got < n:
        k = stream.readinto(mv[got:n])
        if not k:
            raise EOFError("stdin ended inside a clip")
        got += k


def main():
    model = nnrt.load(sys.argv[1])
    stream = sys.stdin.buffer
    head = bytearray(8)
    buf = bytearray(2 * _CHUNK)
    mv = memoryview(buf)
    fx = Features()
    clip = 0
    while True:
        _read_exact(stream, memoryview(head), 8)
        if head[:4] != b"PCM0":
            raise ValueError("bad clip header: expected b'PCM0' + uint32 sample count")
        left = head[4] | head[5] << 8 | head[6] << 16 | head[7] << 24
        if left == 0:
            break
        fx.reset()
        times, scores, speech = [], [], []
        while left:
            k = _CHUNK if left > _CHUNK else left
            _read_exact(stream, mv, 2 * k)
            for rec in fx.process(mv[: 2 * k]):
                times.append(rec["t"])
                speech.append(rec["speech"])
                scores.append(model.score(rec["features"]))
            left -= k
        wins = [
            {"t": round(t, 3), "speech": sp, "score": s} for t, s, sp in zip(times, scores, speech)
        ]
        print(json.dumps({"id": clip, "windows": wins}))
        clip += 1


main()
