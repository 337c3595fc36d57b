# Conversation runner for the unix port (models/conversations.py --engine micropython): the
# device's own stages on a stream of whole conversations, as the headset wires them
# (firmware/core/pipeline.py): features -> nnrt model -> attribution -> cue policy, the feature
# baseline restarted when the policy opens a conversation. Audio never touches a file.
#
# argv: model.ccm, policy settings (JSON text)
# stdin: records b"ENR0" | b"PCM0" + uint32 LE sample count + int16 LE samples (16 kHz mono).
#   ENR0: the staff member alone at shift start (counter attribution enrolment) for the next
#   PCM0; PCM0: one conversation stream, fed in 0.25 s chunks; a PCM0 count of 0 ends.
# stdout: one JSON line per decision {"id", "t", "cue"} or {"id", "t", "phase"}.
import json
import os
import sys

from firmware.core import nnrt
from firmware.core.attribution_modes import make_attribution
from firmware.core.features import Features
from firmware.core.policy import Policy

_CHUNK = 4000


def _read_exact(stream, mv, n):
    got = 0
    while got < n:
        k = stream.readinto(mv[got:n])
        if not k:
            raise EOFError("stdin ended inside a record")
        got += k


def _windows(stream, fx, mv, left):
    while left:
        k = _CHUNK if left > _CHUNK else left
        _read_exact(stream, mv, 2 * k)
        yield from fx.process(mv[: 2 * k])
        left -= k


def main():
    model = nnrt.load(sys.argv[1])
    settings = json.loads(sys.argv[2])
    stream = sys.stdin.buffer
    head = bytearray(8)
    buf = bytearray(2 * _CHUNK)
    mv = memoryview(buf)
    fx = Features()
    who = make_attribution(settings)
    policy = Policy(settings, os.urandom)
    conv = 0
    while True:
        _read_exact(stream, memoryview(head), 8)
        tag = bytes(head[:4])
        left = head[4] | head[5] << 8 | head[6] << 16 | head[7] << 24
        if tag == b"ENR0":
            fx.reset()
            who.forget()
            for rec in _windows(stream, fx, mv, left):
                who.enrol(rec["speech"], rec["level_db"], rec["f0_hz"])
            who.finish_enrolment()
            continue
        if tag != b"PCM0":
            raise ValueError("bad record header: expected b'ENR0' or b'PCM0' + uint32 count")
        if left == 0:
            break
        fx.reset()
        policy.reset()
        if not hasattr(who, "enrol") and hasattr(who, "forget"):
            who.forget()  # headset: the wearer's level starts over with each stream
        t = 0.0
        for rec in _windows(stream, fx, mv, left):
            t = rec["t"]
            score = model.score(rec["features"])
            speaker = who.process(rec["speech"], rec["level_db"], rec["f0_hz"])
            for d in policy.step(t, score, speaker, rec["rate"], rec["level_db"], rec["speech"]):
                if d["type"] == "cue":
                    print(json.dumps({"id": conv, "t": d["t"], "cue": d["cue"]}))
                elif d["phase"] == "start":
                    fx.new_conversation()
                    print(json.dumps({"id": conv, "t": d["t"], "phase": "start"}))
        policy.finish(t)
        if hasattr(who, "enrol"):
            who.forget()
        conv += 1


main()
