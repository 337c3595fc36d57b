# WAV-driven runner for the unix port: scores audio streamed on stdin exactly as the device
# does (firmware/features.py -> firmware/nnrt.py) and prints one JSON line per clip.
# Used by `calmcue score --engine micropython`; the audio never touches a file.
#
# argv: model.ccm speech_min
# stdin lines: "F <id>" starts a clip (new stream), then base64 int16 LE PCM chunks, "E" ends
# it; "Q" quits. Output per clip: {"id", "score", "windows": [{"t", "score"}, ...]}
# Clip score = median window score over windows with speech >= speech_min (models/train.py).
import json
import sys

try:
    from binascii import a2b_base64
except ImportError:
    from ubinascii import a2b_base64

from firmware import nnrt
from firmware.features import Features


def clip_score(scores, speech, speech_min):
    if not scores:
        return 0.0
    sel = [s for s, sp in zip(scores, speech) if sp >= speech_min]
    if not sel:
        top = max(speech)
        sel = [s for s, sp in zip(scores, speech) if sp >= top - 1e-9]
    sel.sort()
    n = len(sel)
    return (sel[(n - 1) // 2] + sel[n // 2]) / 2.0


def main():
    model = nnrt.load(sys.argv[1])
    speech_min = float(sys.argv[2])
    fx = Features()
    clip = None
    t_list, s_list, sp_list = [], [], []
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if line == "Q":
            break
        if line.startswith("F "):
            clip = line[2:]
            fx.reset()
            t_list, s_list, sp_list = [], [], []
        elif line == "E":
            score = clip_score(s_list, sp_list, speech_min)
            wins = [{"t": round(t, 3), "score": round(s, 4)} for t, s in zip(t_list, s_list)]
            print(json.dumps({"id": clip, "score": round(score, 4), "windows": wins}))
            clip = None
        elif line:
            for rec in fx.process(a2b_base64(line)):
                t_list.append(rec["t"])
                sp_list.append(rec["speech"])
                s_list.append(model.score(rec["features"]))


main()
