# Cue policy: turns the per-window stream (stress score, who is talking, pace, loudness) into
# the few cues the customer-service advice calls for. Pure and portable: no clock, pins, MQTT or
# I/O; MicroPython and CPython run it unchanged. Decisions map 1:1 onto v1 events.
#
#   slow_down     staff faster or louder than the customer, or rising with them (mirroring)
#   empathize     customer stress above stress_threshold, and stress_rise above their own
#                 calm level, for empathize_after_s
#   call_manager  stress sustained well past an empathize, still rising, or very intense
#   settled       customer stress back to the conversation's baseline after a cue
#
# Only customer windows carry stress here. Staff windows give pace and loudness; in EU mode
# their scores are dropped on arrival, so nothing about the staff voice is inferred or sent.
# Why the defaults are what they are: docs/policy.md.
#
# Heap: a Policy lives for the whole run on the headset, so its state is two arrays indexed by
# the constants below (array('d') for the thresholds and the float state, exact on both float
# widths; array('i') for window counts and counters) instead of ~60 attributes, two helper
# classes and four small objects; the validated settings dict is not kept, and the code that
# turns it into the arrays (firmware/policy_setup.py) is loaded only then. Values stored into
# the float array are written as ints where that is the same number (no boxed float constant).
from firmware.events import new_conversation_id

try:
    from micropython import const
except ImportError:  # CPython: constants are plain ints (int(5) is 5; no function to keep)
    const = int  # type: ignore[assignment,misc]


# Float array: settings (filled by firmware/policy_setup.py in this order), then state reset
# per conversation (_T0 ..), then the smoothers' buffers (k each for the customer and the
# staff voice, then k of scratch).
_HOP = const(0)
_MIN_SPEECH = const(1)
_PACE_MIN_SPEECH = const(2)
_GAP = const(3)
_THR = const(4)  # stress_threshold
_TENSE = const(5)
_INTENSE = const(6)
_RISE = const(7)  # manager_rise
_EMP_REFR = const(8)
_SLOW_REFR = const(9)
_MIN_GAP = const(10)
_BASE_DEFAULT = const(11)
_BASE_MAX = const(12)
_SETTLE_MARGIN = const(13)
_RATE_RISE = const(14)
_RATE_MARGIN = const(15)
_DB_RISE = const(16)
_DB_MARGIN = const(17)
_PACE_ALPHA = const(18)
_EMA_ALPHA = const(19)
_SPAN = const(20)  # smoothing span: further apart, two scores belong to different turns
_STRESS_RISE = const(21)  # how far above the customer's own calm level stress starts
_T0 = const(22)
_LAST_VOICE = const(23)
_LAST_NUDGE = const(24)
_LAST_EMP = const(25)
_LAST_SLOW = const(26)
_PEAK = const(27)
_SCORE = const(28)  # latest smoothed customer stress score
_BASE_SUM = const(29)
_STAFF_SCORE = const(30)
# Highest smoothed staff score while the customer was not tense: what this voice reads as
# when it is calm (the model scores some calm voices high).
_STAFF_CALM = const(31)
_VOICES = const(32)  # staff then customer: base rate, base dB, rate, dB (running average)
_SMOOTH = const(40)  # customer then staff: value, time of the last score
_EMP_SCORE = const(44)  # the episode's (reset at settled)
_FIRST_CUE_T = const(45)
_TENSE_AT = const(46)  # the customer's tense level: tense_threshold, or higher for a voice read high
_FBUF = const(47)
# Int array: settings in windows and switches (filled by firmware/policy_setup.py in this
# order), then state reset per conversation (_CUES ..), the last seven of it per episode
# (_STAGE ..).
_N_EMP = const(0)
_N_SUSTAIN = const(1)
_N_RISE = const(2)
_N_INTENSE = const(3)
_N_SETTLE = const(4)
_N_BASE = const(5)
_N_SLOW = const(6)
_BUDGET = const(7)
_N_SPK = const(8)
_K = const(9)  # median over k scores (1 for ema and none)
_MODE = const(10)  # smoothing: 0 median, 1 ema, 2 none
_EU = const(11)
_FROM_UNKNOWN = const(12)
_CUES = const(13)
_NUDGES = const(14)
_MANAGER_CALLED = const(15)
_BASE_N = const(16)
_SLOW_RUN = const(17)
_VOICE_N = const(18)  # staff, customer: windows in the voice's baseline so far
_SMOOTH_N = const(20)  # customer then staff: scores held, next buffer slot
_STAGE = const(24)  # 0 calm, 1 past empathize, 2 manager called
_ABOVE_RUN = const(25)
_INTENSE_RUN = const(26)
_RISE_RUN = const(27)
_CALM_RUN = const(28)
_SUSTAIN = const(29)
_STRESS_N = const(30)
_IN = const(31)


def _r3(x):
    # Same arithmetic on both interpreters, so timelines compare equal (inputs are >= 0).
    return int(x * 1000 + 0.5) / 1000


class PolicyError(ValueError):
    pass


class Policy:
    """Streaming cue policy. `process(window)` per window (dict with t, score, speaker, rate,
    level_db, speech) returns a list of decisions; `finish(t)` closes an open conversation at
    the end of a stream; `reset()` forgets everything.

    A decision is a dict: {"type": "cue" | "conversation", "t": window end time (s), ...the
    schema fields of that event type}. `event_fields(decision)` gives (type, fields) for
    firmware.events.Stamper.stamp.

    `rand_bytes(n)` makes conversation ids (os.urandom, or the device's equivalent).
    """

    def __init__(self, settings=None, rand_bytes=None):
        self._f = self._n = None
        self._rand = rand_bytes
        self.configure(settings)
        if rand_bytes is None:
            raise PolicyError("pass rand_bytes (e.g. os.urandom) to make conversation ids")

    def configure(self, settings):
        """(New) settings, checked (SettingsError lists what is wrong); the policy starts over.
        The arrays are made once, for the longest smoothing, and refilled in place: a config
        message on the headset then allocates nothing that outlives it, so no long-lived block
        lands among the code it loads for the moment and cuts the heap up once that is gone."""
        # The validator is imported here, not at the top: the headset drops
        # firmware.cue_settings between config messages (firmware/app.py); the policy keeps
        # only the values it uses. checked() gives them key by key, without a dict of all the
        # settings (one 624 B block).
        from firmware.cue_settings import SettingsError, checked, windows

        s, errors = checked(settings or {})
        if errors:
            raise SettingsError("; ".join(errors))
        import sys

        import firmware
        from firmware import policy_setup

        self._f, self._n = policy_setup.arrays(s, windows, _FBUF, _IN, self._f, self._n)
        # Needed again only for the next settings: not kept loaded (as firmware/app.py's _forget).
        sys.modules.pop("firmware.policy_setup", None)
        if hasattr(firmware, "policy_setup"):
            delattr(firmware, "policy_setup")
        self.reset()

    def reset(self):
        self.conv = None
        self._end(None)

    # ---- input ---------------------------------------------------------------------------

    def process(self, w):
        return self.step(w["t"], w["score"], w["speaker"], w["rate"], w["level_db"], w["speech"])

    def step(self, t, score, speaker, rate, level_db, speech):
        if speaker != "staff" and speaker != "customer" and speaker != "unknown":
            raise PolicyError("speaker must be staff, customer or unknown (got %r)" % (speaker,))
        f = self._f
        n = self._n
        out = []
        voiced = speech >= f[_MIN_SPEECH]
        if self.conv is None:
            if not voiced:
                return out
            self.conv = new_conversation_id(self._rand)
            f[_T0] = t
            f[_LAST_VOICE] = t
            out.append(
                {"type": "conversation", "t": t, "conv": self.conv, "phase": "start", "conv_s": 0.0}
            )
        elif voiced:
            f[_LAST_VOICE] = t
        else:
            if t - f[_LAST_VOICE] >= f[_GAP]:
                out.append(self._end(t))
            # Pauses, noise and bursts shorter than min_speech neither count nor reset.
            return out
        if score is not None and (score != score or score < 0):
            score = None  # NaN or negative: no stress reading this window
        elif score is not None and score > 1.0:
            score = 1.0
        staff = speaker == "staff"
        # Whose stress this score is: the customer's (0; an unattributed voice only when
        # stress_from_unknown), the staff voice's (1; outside EU mode only, for mirroring).
        w = -1
        if score is not None:
            if staff:
                w = -1 if n[_EU] else 1
            elif speaker == "customer" or n[_FROM_UNKNOWN]:
                w = 0
        if w >= 0:
            # Smoothed: median of the last k scores, an EMA, or nothing. Scores further apart
            # than the smoothing span belong to different turns: a new turn starts afresh
            # instead of being held back by the end of the speaker's previous one.
            v = _SMOOTH + 2 * w  # value, time of the last score
            c = _SMOOTH_N + 2 * w  # scores held, next buffer slot
            if n[c] and t - f[v + 1] > f[_SPAN]:
                n[c] = 0
                n[c + 1] = 0
                f[v] = 0
            f[v + 1] = t
            mode = n[_MODE]
            if mode == 1:
                f[v] = score if n[c] == 0 else f[v] + f[_EMA_ALPHA] * (score - f[v])
                n[c] += 1
            elif mode == 2:
                f[v] = score
            else:
                k = n[_K]
                buf = _FBUF + w * k
                tmp = _FBUF + 2 * k
                f[buf + n[c + 1]] = score
                n[c + 1] = (n[c + 1] + 1) % k
                if n[c] < k:
                    n[c] += 1
                m = n[c]
                for j in range(m):  # insertion sort of at most k values
                    x = f[buf + j]
                    i = j
                    while i > 0 and f[tmp + i - 1] > x:
                        f[tmp + i] = f[tmp + i - 1]
                        i -= 1
                    f[tmp + i] = x
                if m & 1:
                    f[v] = f[tmp + m // 2]
                else:
                    f[v] = (f[tmp + m // 2 - 1] + f[tmp + m // 2]) / 2
            x = f[v]
            if w:
                f[_STAFF_SCORE] = x
                if (f[_SCORE] < f[_TENSE] or f[_SCORE] < f[_TENSE_AT]) and x > f[_STAFF_CALM]:
                    f[_STAFF_CALM] = x
        # Pace and loudness only from windows mostly full of speech: a window that a turn
        # starts or ends in holds fewer onsets and would read as a slower, quieter voice.
        solid = speech >= f[_PACE_MIN_SPEECH]
        if solid and speaker != "unknown":
            # The speaker's pace and loudness: a baseline from their first windows, then a
            # short running average of the recent ones.
            v = _VOICES if staff else _VOICES + 4
            c = _VOICE_N if staff else _VOICE_N + 1
            if n[c] < n[_N_SPK]:
                n[c] += 1
                f[v] += (rate - f[v]) / n[c]
                f[v + 1] += (level_db - f[v + 1]) / n[c]
                f[v + 2] = f[v]
                f[v + 3] = f[v + 1]
            else:
                a = f[_PACE_ALPHA]
                f[v + 2] += a * (rate - f[v + 2])
                f[v + 3] += a * (level_db - f[v + 3])
        if w == 0:
            self._stress(t, x, out)
        elif staff and solid:
            # slow_down: the staff voice faster or louder than the customer, or rising with
            # them, for slow_down_after_s.
            reason = None
            if n[_VOICE_N] >= n[_N_SPK]:  # the staff voice's baseline is known
                tense = f[_SCORE] >= f[_TENSE] and f[_SCORE] >= f[_TENSE_AT]
                # staff: _VOICES + 0..3, customer: _VOICES + 4..7 (base rate, base dB, rate, dB)
                s_db = f[_VOICES + 3] - f[_VOICES + 1]
                rising = f[_VOICES + 2] - f[_VOICES] >= f[_RATE_RISE] or s_db >= f[_DB_RISE]
                faster = louder = cust_rising = False
                if n[_VOICE_N + 1] >= n[_N_SPK]:
                    c_db = f[_VOICES + 7] - f[_VOICES + 5]
                    faster = f[_VOICES + 2] >= f[_VOICES + 6] + f[_RATE_MARGIN]
                    louder = s_db >= c_db + f[_DB_MARGIN]
                    cust_rising = (
                        f[_VOICES + 6] - f[_VOICES + 4] >= f[_RATE_RISE] or c_db >= f[_DB_RISE]
                    )
                if rising and (cust_rising or tense):
                    reason = "mirroring"
                elif faster and (rising or tense):
                    reason = "faster"
                elif louder and rising:
                    reason = "louder"
                # The staff voice's stress mirrors the customer's only when it rose above what
                # the same voice read while the customer was calm.
                elif (
                    not n[_EU]
                    and f[_STAFF_SCORE] >= f[_THR]
                    and f[_STAFF_SCORE] > f[_STAFF_CALM] + f[_SETTLE_MARGIN]
                    and (tense or cust_rising)
                ):
                    reason = "mirroring"
            if reason is None:
                n[_SLOW_RUN] = 0
            else:
                n[_SLOW_RUN] += 1
                if n[_SLOW_RUN] >= n[_N_SLOW]:
                    if self._nudge(t, _LAST_SLOW, _SLOW_REFR, "slow_down", reason, out) == 0:
                        n[_SLOW_RUN] = 0
        return out

    def finish(self, t):
        """End of stream: close the open conversation, if any."""
        if self.conv is None:
            return []
        return [self._end(t)]

    # ---- state ---------------------------------------------------------------------------

    def _end(self, t):
        # The conversation's end decision (None when t is None), and its state starts over.
        f = self._f
        n = self._n
        d = None
        if t is not None:
            d = {
                "type": "conversation",
                "t": t,
                "conv": self.conv,
                "phase": "end",
                "conv_s": _r3(f[_LAST_VOICE] - f[_T0]),
                "cues": n[_CUES],
            }
            if f[_PEAK] >= 0:
                d["peak"] = _r3(f[_PEAK])
            self.conv = None
        for i in range(_T0, _FBUF):
            f[i] = 0
        f[_LAST_NUDGE] = -1000000000
        f[_LAST_EMP] = -1000000000
        f[_LAST_SLOW] = -1000000000
        f[_PEAK] = -1
        f[_FIRST_CUE_T] = -1
        for i in range(_CUES, _IN):
            n[i] = 0
        return d

    # ---- decisions -----------------------------------------------------------------------

    def _cue(self, t, cue, reason, out):
        f = self._f
        n = self._n
        d = {
            "type": "cue",
            "t": t,
            "conv": self.conv,
            "cue": cue,
            "level": 3 if cue == "call_manager" else (2 if cue == "empathize" else 1),
            "score": _r3(f[_SCORE]),
            "conv_s": _r3(t - f[_T0]),
            "reason": reason,
        }
        if cue != "slow_down":
            d["stress_s"] = _r3(n[_STRESS_N] * f[_HOP])
            if cue != "settled" and f[_FIRST_CUE_T] < 0:
                f[_FIRST_CUE_T] = t
        n[_CUES] += 1
        out.append(d)
        return d

    def _nudge(self, t, last, refractory, cue, reason, out):
        # A nudge (empathize, slow_down) unless held back: 1 when the budget or the cue's
        # refractory time (f[refractory] since f[last]) drops it, 2 when the gap since the
        # last nudge only delays it to a later window; 0 when sent.
        f = self._f
        n = self._n
        if n[_NUDGES] >= n[_BUDGET] or t - f[last] < f[refractory]:
            return 1
        if t - f[_LAST_NUDGE] < f[_MIN_GAP]:
            return 2
        f[last] = t
        n[_NUDGES] += 1
        f[_LAST_NUDGE] = t
        self._cue(t, cue, reason, out)
        return 0

    def _stress(self, t, x, out):
        f = self._f
        n = self._n
        f[_SCORE] = x
        if x > f[_PEAK]:
            f[_PEAK] = x
        if n[_BASE_N] < n[_N_BASE]:
            n[_BASE_N] += 1
            f[_BASE_SUM] += x
        # The customer's own calm level: the mean of their first baseline_s of speech, capped
        # so that an angry opening does not become "calm".
        known = n[_BASE_N] >= n[_N_BASE]
        b = f[_BASE_SUM] / n[_BASE_N] if known else f[_BASE_DEFAULT]
        # Stressed = above stress_threshold *and* stress_rise above their own calm level (a
        # voice the model reads high when calm must rise above that), at most the intense
        # level; not before that level is known (the first seconds of a conversation read
        # high: the front end's baseline is still forming), except for the very intense.
        thr = b + f[_STRESS_RISE]
        if thr < f[_THR]:
            thr = f[_THR]
        if thr > f[_INTENSE]:
            thr = f[_INTENSE]
        # "Tense" (for slow_down) moves with it: halfway up to the stress level.
        f[_TENSE_AT] = b + f[_STRESS_RISE] / 2
        # Settled: back within settle_margin of the calm level (capped, so a customer who
        # arrived angry must come down to a calm level, not to their angry opening), or below
        # halfway from their own calm level to the stress level.
        calm = (b if b < thr else thr) + thr
        calm = calm / 2
        if b >= f[_BASE_MAX]:
            b = f[_BASE_MAX]
        if calm < b + f[_SETTLE_MARGIN]:
            calm = b + f[_SETTLE_MARGIN]
        above = known and x >= thr
        n[_ABOVE_RUN] = n[_ABOVE_RUN] + 1 if above else 0
        n[_INTENSE_RUN] = n[_INTENSE_RUN] + 1 if x >= f[_INTENSE] else 0
        # An episode runs from the first empathize-worthy stretch to `settled`.
        stage = n[_STAGE]
        reason = None
        if stage == 0:
            if n[_ABOVE_RUN] == 0 and n[_INTENSE_RUN] == 0:
                return
            n[_STRESS_N] += 1
            if n[_INTENSE_RUN] < n[_N_INTENSE]:
                # While very intense right now, wait a moment for call_manager instead.
                if n[_ABOVE_RUN] >= n[_N_EMP] and n[_INTENSE_RUN] == 0:
                    # Dropped by budget or refractory, the episode still moves on, so the
                    # manager can be called when stress carries on; a gap retries next window.
                    if (
                        self._nudge(t, _LAST_EMP, _EMP_REFR, "empathize", "stress_sustained", out)
                        < 2
                    ):
                        n[_STAGE] = 1
                        f[_EMP_SCORE] = x
                return
            reason = "very_intense"
        else:
            if above:
                n[_STRESS_N] += 1
            if stage == 1:
                if above:
                    n[_SUSTAIN] += 1
                n[_RISE_RUN] = n[_RISE_RUN] + 1 if x >= f[_EMP_SCORE] + f[_RISE] else 0
                if n[_INTENSE_RUN] >= n[_N_INTENSE]:
                    reason = "very_intense"
                elif n[_SUSTAIN] >= n[_N_SUSTAIN]:
                    reason = "sustained"
                elif n[_RISE_RUN] >= n[_N_RISE]:
                    reason = "rising"
        if reason is not None:
            # call_manager: once per conversation; never held back by the budget,
            # refractory or gap.
            n[_STAGE] = 2
            if not n[_MANAGER_CALLED]:
                n[_MANAGER_CALLED] = 1
                self._cue(t, "call_manager", reason, out)
            return
        n[_CALM_RUN] = n[_CALM_RUN] + 1 if x <= calm else 0
        if n[_CALM_RUN] >= n[_N_SETTLE]:
            if f[_FIRST_CUE_T] >= 0:
                d = self._cue(t, "settled", "baseline", out)
                d["ttd_s"] = _r3(t - f[_FIRST_CUE_T])
            for i in range(_STAGE, _IN):
                n[i] = 0
            f[_EMP_SCORE] = 0
            f[_FIRST_CUE_T] = -1


def event_fields(decision):
    """(event type, schema fields) of a decision, for firmware.events.Stamper.stamp."""
    fields = {}
    for k in decision:
        if k != "type" and k != "t":
            fields[k] = decision[k]
    return decision["type"], fields
