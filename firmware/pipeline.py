# Audio -> stress score -> cue decisions, for the headset firmware.
#
# PLACEHOLDER until the shared stages land (issues 3, 4, 5): firmware/features.py (prosody
# features), firmware/nnrt.py + a compact model file (stress score) and firmware/policy.py (cue
# policy). Until then this module scores a window by its loudness relative to the start of the
# conversation and applies a small debounce/refractory/budget policy, so the firmware around it
# (outputs, events, queue, network) can be built and tested end to end. The interface the rest of
# the firmware relies on is only `Pipeline(settings, rand).process(samples, n, t_s)` returning a
# list of (event type, fields) with the cue events first-class, and `reset()`.
from array import array
from math import log10

import micropython

from firmware import events

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_FRAME = const(250)  # samples: 15.6 ms frames
_WINDOW_HOPS = const(4)  # 1 s windows of four 0.25 s hops
_ACTIVE_DB = -50.0  # frame level above which a frame counts as speech (placeholder gate)
_END_SILENCE_WINDOWS = const(24)  # 6 s of silence ends a conversation
_BASELINE_WINDOWS = const(12)  # the first 3 s of speech are this conversation's baseline

MODEL_ID = "placeholder-level"


@micropython.viper
def _frame_energy(buf: ptr16, start: int, n: int) -> int:  # noqa: F821
    s = 0
    for i in range(start, start + n):
        v = int(buf[i])
        if v > 32767:
            v -= 65536
        s += (v * v) >> 8
    return s


class Pipeline:
    def __init__(self, settings, rand):
        self.rand = rand
        p = settings.get("policy", {})
        self.threshold = p.get("threshold", 0.6)
        self.settle = p.get("settle", 0.3)
        self.debounce = p.get("debounce_windows", 6)
        self.refractory_s = p.get("refractory_s", 20)
        self.budget = p.get("budget", 4)
        self.manager_after_s = p.get("manager_after_s", 15)
        # Per-hop frame statistics of the last four hops (ring): active frames and their dB sum.
        self._act = array("i", bytes(4 * _WINDOW_HOPS))
        self._db = array("f", bytes(4 * _WINDOW_HOPS))
        self._hop = 0
        self._hops_seen = 0
        self._out = []
        self.reset()

    def reset(self):
        self.conv = None
        self._conv_start = 0.0
        self._silent = 0
        self._base_sum = 0.0
        self._base_n = 0
        self._above = 0
        self._below = 0
        self._last_cue_t = -1e9
        self._cues = 0
        self._empathize_t = -1.0
        self._manager = False
        self._stress_start = -1.0
        self._peak = 0.0
        self._await_settle = False
        self.last_score = 0.0

    def process(self, samples, n, t_s):
        """One hop of audio (`samples[:n]`, ending at stream time t_s). Returns [(type, fields)]."""
        out = self._out
        out.clear()
        act = 0
        dbsum = 0.0
        i = 0
        while i + _FRAME <= n:
            e = _frame_energy(samples, i, _FRAME)
            if e > 0:
                db = 10 * log10(e * 256.0 / _FRAME / 1073741824.0)
                if db > _ACTIVE_DB:
                    act += 1
                    dbsum += db
            i += _FRAME
        h = self._hop
        self._act[h] = act
        self._db[h] = dbsum
        self._hop = (h + 1) % _WINDOW_HOPS
        self._hops_seen += 1
        if self._hops_seen < _WINDOW_HOPS:
            return out
        tot = 0
        s = 0.0
        for k in range(_WINDOW_HOPS):
            tot += self._act[k]
            s += self._db[k]
        speech = tot / (_WINDOW_HOPS * n // _FRAME or 1)
        level_db = s / tot if tot else -100.0
        self._window(t_s, speech, level_db, out)
        return out

    def _window(self, t, speech, level_db, out):
        if speech < 0.2:
            if self.conv is not None:
                self._silent += 1
                if self._silent >= _END_SILENCE_WINDOWS:
                    out.append(("conversation", {
                        "conv": self.conv, "phase": "end", "conv_s": round(t - self._conv_start, 2),
                        "cues": self._cues, "peak": round(self._peak, 3),
                    }))
                    self.reset()
            return
        self._silent = 0
        if self.conv is None:
            self.conv = events.new_conversation_id(self.rand)
            self._conv_start = t
            out.append(("conversation", {"conv": self.conv, "phase": "start", "conv_s": 0}))
        if self._base_n < _BASELINE_WINDOWS:
            self._base_sum += level_db
            self._base_n += 1
            return
        base = self._base_sum / self._base_n
        score = (level_db - base - 2.0) / 8.0
        score = 0.0 if score < 0 else (1.0 if score > 1 else score)
        self.last_score = score
        if score > self._peak:
            self._peak = score
        conv_s = round(t - self._conv_start, 2)
        if score >= self.threshold:
            self._above += 1
            self._below = 0
            if self._stress_start < 0:
                self._stress_start = t
        else:
            self._above = 0
            if score < self.settle:
                self._stress_start = -1.0 if not self._await_settle else self._stress_start
                self._below += 1
        cue = None
        level = 1
        if (self._empathize_t >= 0 and not self._manager and self._above >= self.debounce
                and t - self._empathize_t >= self.manager_after_s):
            cue = "call_manager"
            level = 3
            self._manager = True
        elif self._above >= self.debounce and t - self._last_cue_t >= self.refractory_s:
            cue = "empathize"
            level = 2 if score > 0.8 else 1
            if self._empathize_t < 0:
                self._empathize_t = t
        elif self._below >= self.debounce and self._await_settle:
            cue = "settled"
            fields = {
                "conv": self.conv, "cue": "settled", "level": 1, "score": round(score, 3),
                "conv_s": conv_s, "ttd_s": round(t - self._last_cue_t, 2), "reason": "placeholder",
            }
            self._stress_start = -1.0
            self._empathize_t = -1.0
            self._await_settle = False
            out.append(("cue", fields))
            return
        if cue is None or self._cues >= self.budget:
            return
        self._cues += 1
        self._last_cue_t = t
        self._await_settle = True
        out.append(("cue", {
            "conv": self.conv, "cue": cue, "level": level, "score": round(score, 3),
            "conv_s": conv_s, "stress_s": round(t - self._stress_start, 2), "reason": "placeholder",
        }))
