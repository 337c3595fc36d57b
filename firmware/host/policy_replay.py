# Replays scripted conversations through the cue policy: the scenario tests and the latency
# benchmark use it on CPython and on the MicroPython unix port alike. Not part of the device
# bundle's run loop; it only reads a script and prints JSON lines.
#
# A script is a list of segments, each lasting `for_s` seconds:
#   {"for_s": 3, "speaker": "customer", "score": [0.2, 0.8], "rate": 4.0, "level_db": -30,
#    "speech": 0.9, "jitter": 0.05}
# A pair [a, b] ramps linearly over the segment; "speaker": "silence" is a pause. Segments are
# cut into hop-long slices, and each 1 s window mixes the slices it covers the way the front end
# would: speech is the voiced fraction, score/rate/level are speech-weighted, and the speaker is
# whoever holds at least 3/4 of the voiced time, else "unknown" (turn changes, overlap).
import json

from firmware.core.policy import Policy, event_fields  # noqa: F401  (event_fields re-exported)

_SILENT_DB = -70.0
# A fixed, small wobble so scores are not flat lines (same on every interpreter).
_WOBBLE = (0.0, 1.0, -0.5, 0.5, -1.0, 0.25, -0.25)


def _value(v, frac):
    if isinstance(v, list):
        return v[0] + (v[1] - v[0]) * frac
    return v


def slices(script, hop):
    """Per-slice (speaker, score, rate, level_db, speech) tuples, one every `hop` seconds."""
    k = 0
    for seg in script:
        n = int(seg["for_s"] / hop + 0.5)
        speaker = seg.get("speaker", "unknown")
        jitter = seg.get("jitter", 0.0)
        for i in range(n):
            frac = (i + 0.5) / n
            if speaker == "silence":
                yield ("unknown", 0.0, 0.0, _SILENT_DB, 0.0)
            else:
                score = _value(seg.get("score", 0.2), frac) + jitter * _WOBBLE[k % 7]
                score = 0.0 if score < 0.0 else (1.0 if score > 1.0 else score)
                yield (
                    speaker,
                    score,
                    _value(seg.get("rate", 3.5), frac),
                    _value(seg.get("level_db", -30.0), frac),
                    _value(seg.get("speech", 0.9), frac),
                )
            k += 1


def windows(script, hop=0.25, window_s=1.0):
    """Window records (dicts) as the front end would hand them to the policy."""
    n = int(window_s / hop + 0.5)
    ring = [None] * n
    i = 0
    t_q = 0  # time in hops, so t stays exact
    for sl in slices(script, hop):
        ring[i % n] = sl
        i += 1
        t_q += 1
        w_sum = 0.0
        score = rate = level = 0.0
        per = {"staff": 0.0, "customer": 0.0, "unknown": 0.0}
        for sl2 in ring:
            if sl2 is None:
                continue
            w = sl2[4]
            w_sum += w
            per[sl2[0]] += w
            score += w * sl2[1]
            rate += w * sl2[2]
            level += w * sl2[3]
        if w_sum > 0.0:
            score /= w_sum
            rate /= w_sum
            level /= w_sum
            speaker = "unknown"
            for who in ("staff", "customer"):
                if per[who] >= 0.75 * w_sum:
                    speaker = who
        else:
            speaker, level = "unknown", _SILENT_DB
        yield {
            "t": t_q * hop,
            "score": score,
            "speaker": speaker,
            "rate": rate,
            "level_db": level,
            "speech": w_sum / n,
        }


class CountingRandom:
    """Deterministic stand-in for os.urandom, so timelines compare across interpreters."""

    def __init__(self):
        self.n = 0

    def __call__(self, k):
        self.n += 1
        return bytes(((self.n * 37 + j * 11) & 0xFF) for j in range(k))


def run(scenario, hop=0.25):
    """Decisions for one scenario (settings + script), the stream closed at its end."""
    settings = scenario.get("settings", {})
    if "hop_s" not in settings and hop != 0.25:
        settings = dict(settings)
        settings["hop_s"] = hop
    policy = Policy(settings, rand_bytes=CountingRandom())
    out = []
    t = 0.0
    for w in windows(scenario["script"], hop):
        t = w["t"]
        for d in policy.process(w):
            out.append(d)
    for d in policy.finish(t):
        out.append(d)
    return out


def main(path):
    """Print one JSON line per scenario: {"name": ..., "decisions": [...]}."""
    with open(path) as f:
        doc = json.load(f)
    hop = doc.get("hop_s", 0.25)
    for sc in doc["scenarios"]:
        print(json.dumps({"name": sc["name"], "decisions": run(sc, hop)}))
