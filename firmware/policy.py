# Cue policy: turns the per-window stream (stress score, who is talking, pace, loudness) into
# the few cues the customer-service advice calls for. Pure and portable: no clock, pins, MQTT or
# I/O; MicroPython and CPython run it unchanged. Decisions map 1:1 onto v1 events.
#
#   slow_down     staff faster or louder than the customer, or rising with them (mirroring)
#   empathize     customer stress above stress_threshold for empathize_after_s
#   call_manager  stress sustained well past an empathize, still rising, or very intense
#   settled       customer stress back to the conversation's baseline after a cue
#
# Only customer windows carry stress here. Staff windows give pace and loudness; in EU mode
# their scores are dropped on arrival, so nothing about the staff voice is inferred or sent.
# Why the defaults are what they are: docs/policy.md.
from firmware.cue_settings import SettingsError, validate_settings, windows
from firmware.events import new_conversation_id

SPEAKERS = ("staff", "customer", "unknown")

# Urgency of each cue, the event's `level`.
_LEVEL = {"slow_down": 1, "empathize": 2, "call_manager": 3, "settled": 1}


def _r3(x):
    # Same arithmetic on both interpreters, so timelines compare equal (inputs are >= 0).
    return int(x * 1000 + 0.5) / 1000


class PolicyError(ValueError):
    pass


class _Voice:
    """Pace and loudness of one speaker in the current conversation: a baseline from their
    first windows and a short running average of the recent ones."""

    def __init__(self, n_base, alpha):
        self.n_base = n_base
        self.alpha = alpha
        self.reset()

    def reset(self):
        self.n = 0
        self.base_rate = 0.0
        self.base_db = 0.0
        self.rate = 0.0
        self.db = 0.0

    def add(self, rate, level_db):
        if self.n < self.n_base:
            self.n += 1
            self.base_rate += (rate - self.base_rate) / self.n
            self.base_db += (level_db - self.base_db) / self.n
            self.rate = self.base_rate
            self.db = self.base_db
            return
        a = self.alpha
        self.rate += a * (rate - self.rate)
        self.db += a * (level_db - self.db)

    def known(self):
        return self.n >= self.n_base

    def rate_rise(self):
        return self.rate - self.base_rate

    def db_rise(self):
        return self.db - self.base_db


class _Smoother:
    """Median of the last k scores, an EMA, or nothing; preallocated, no per-window lists.
    Scores further apart than the smoothing span (k hops) belong to different turns: a new
    turn starts afresh instead of being held back by the end of the speaker's previous one."""

    def __init__(self, mode, k, alpha, span_s):
        self.mode = mode
        self.k = k if mode == "median" else 1
        self.alpha = alpha
        self.span = span_s
        self.buf = [0.0] * self.k
        self.tmp = [0.0] * self.k
        self.reset()

    def reset(self):
        self.n = 0
        self.i = 0
        self.value = 0.0
        self.t = 0.0

    def add(self, t, x):
        if self.n and t - self.t > self.span:
            self.reset()
        self.t = t
        if self.mode == "ema":
            self.value = x if self.n == 0 else self.value + self.alpha * (x - self.value)
            self.n += 1
            return self.value
        if self.mode == "none":
            self.value = x
            return x
        self.buf[self.i] = x
        self.i = (self.i + 1) % self.k
        if self.n < self.k:
            self.n += 1
        n = self.n
        tmp = self.tmp
        for j in range(n):  # insertion sort of at most k values
            v = self.buf[j]
            m = j
            while m > 0 and tmp[m - 1] > v:
                tmp[m] = tmp[m - 1]
                m -= 1
            tmp[m] = v
        if n & 1:
            self.value = tmp[n // 2]
        else:
            self.value = (tmp[n // 2 - 1] + tmp[n // 2]) / 2
        return self.value


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
        s, errors = validate_settings(settings or {})
        if errors:
            raise SettingsError("; ".join(errors))
        if rand_bytes is None:
            raise PolicyError("pass rand_bytes (e.g. os.urandom) to make conversation ids")
        self.settings = s
        self._rand = rand_bytes
        hop = s["hop_s"]
        self.hop = hop
        self.eu = s["eu_mode"]
        self.min_speech = s["min_speech"]
        self.pace_min_speech = s["pace_min_speech"]
        self.gap_s = s["conversation_gap_s"]
        self.thr = s["stress_threshold"]
        self.tense = s["tense_threshold"]
        self.intense = s["intense_threshold"]
        self.rise = s["manager_rise"]
        self.n_emp = windows(s["empathize_after_s"], hop)
        self.n_sustain = windows(s["manager_after_s"], hop)
        self.n_rise = windows(s["manager_rise_s"], hop)
        self.n_intense = windows(s["intense_after_s"], hop)
        self.n_settle = windows(s["settle_after_s"], hop)
        self.n_base = windows(s["baseline_s"], hop)
        self.n_slow = windows(s["slow_down_after_s"], hop)
        self.emp_refr = s["empathize_refractory_s"]
        self.slow_refr = s["slow_down_refractory_s"]
        self.budget = s["cue_budget"]
        self.min_gap = s["min_gap_s"]
        self.base_default = s["baseline_default"]
        self.base_max = s["baseline_max"]
        self.settle_margin = s["settle_margin"]
        self.rate_rise = s["rate_rise"]
        self.rate_margin = s["rate_margin"]
        self.db_rise = s["level_rise_db"]
        self.db_margin = s["level_margin_db"]
        self.from_unknown = s["stress_from_unknown"] and not self.eu
        n_spk = windows(s["speaker_baseline_s"], hop)
        alpha = 2.0 / (windows(s["pace_window_s"], hop) + 1)
        self.staff = _Voice(n_spk, alpha)
        self.customer = _Voice(n_spk, alpha)
        k = s["smoothing_windows"]
        span = k * hop + hop / 2  # k consecutive hops, with room for float rounding
        self.cust_smooth = _Smoother(s["smoothing"], k, s["ema_alpha"], span)
        # Outside EU mode only: the staff voice's own stress counts as mirroring.
        self.staff_smooth = None if self.eu else _Smoother(s["smoothing"], k, s["ema_alpha"], span)
        self.reset()

    # ---- state ---------------------------------------------------------------------------

    def reset(self):
        self.conv = None
        self._reset_conversation()

    def _reset_conversation(self):
        self.t0 = 0.0
        self.last_voice = 0.0
        self.cues = 0
        self.nudges = 0
        self.last_nudge = -1e9
        self.last_emp = -1e9
        self.last_slow = -1e9
        self.manager_called = False
        self.peak = -1.0
        self.score = 0.0  # latest smoothed customer stress score
        self.base_n = 0
        self.base_sum = 0.0
        self.slow_run = 0
        self.staff_score = 0.0
        # Highest smoothed staff score while the customer was not tense: what this voice
        # reads as when it is calm (the model scores some calm voices high).
        self.staff_calm = 0.0
        self.staff.reset()
        self.customer.reset()
        self.cust_smooth.reset()
        if self.staff_smooth is not None:
            self.staff_smooth.reset()
        self._reset_episode()

    def _reset_episode(self):
        # An episode runs from the first empathize-worthy stretch to `settled`.
        self.stage = 0  # 0 calm, 1 past empathize, 2 manager called
        self.above_run = 0
        self.intense_run = 0
        self.rise_run = 0
        self.calm_run = 0
        self.sustain = 0
        self.stress_n = 0
        self.emp_score = 0.0
        self.first_cue_t = -1.0

    # ---- input ---------------------------------------------------------------------------

    def process(self, w):
        return self.step(w["t"], w["score"], w["speaker"], w["rate"], w["level_db"], w["speech"])

    def step(self, t, score, speaker, rate, level_db, speech):
        if speaker not in SPEAKERS:
            raise PolicyError("speaker must be staff, customer or unknown (got %r)" % (speaker,))
        out = []
        voiced = speech >= self.min_speech
        if self.conv is None:
            if not voiced:
                return out
            self.conv = new_conversation_id(self._rand)
            self.t0 = t
            self.last_voice = t
            out.append(
                {"type": "conversation", "t": t, "conv": self.conv, "phase": "start", "conv_s": 0.0}
            )
        elif voiced:
            self.last_voice = t
        else:
            if t - self.last_voice >= self.gap_s:
                out.append(self._end(t))
            # Pauses, noise and bursts shorter than min_speech neither count nor reset.
            return out
        if score is not None and (score != score or score < 0.0):
            score = None  # NaN or negative: no stress reading this window
        elif score is not None and score > 1.0:
            score = 1.0
        # Pace and loudness only from windows mostly full of speech: a window that a turn
        # starts or ends in holds fewer onsets and would read as a slower, quieter voice.
        solid = speech >= self.pace_min_speech
        if speaker == "staff":
            if self.staff_smooth is not None and score is not None:
                self.staff_score = self.staff_smooth.add(t, score)
                if self.score < self.tense and self.staff_score > self.staff_calm:
                    self.staff_calm = self.staff_score
            if solid:
                self.staff.add(rate, level_db)
                self._slow_down(t, out)
        elif speaker == "customer":
            if solid:
                self.customer.add(rate, level_db)
            if score is not None:
                self._stress(t, self.cust_smooth.add(t, score), out)
        elif self.from_unknown and score is not None:
            self._stress(t, self.cust_smooth.add(t, score), out)
        return out

    def finish(self, t):
        """End of stream: close the open conversation, if any."""
        if self.conv is None:
            return []
        return [self._end(t)]

    # ---- decisions -----------------------------------------------------------------------

    def _end(self, t):
        d = {
            "type": "conversation",
            "t": t,
            "conv": self.conv,
            "phase": "end",
            "conv_s": _r3(self.last_voice - self.t0),
            "cues": self.cues,
        }
        if self.peak >= 0.0:
            d["peak"] = _r3(self.peak)
        self.conv = None
        self._reset_conversation()
        return d

    def _cue(self, t, cue, reason, out):
        d = {
            "type": "cue",
            "t": t,
            "conv": self.conv,
            "cue": cue,
            "level": _LEVEL[cue],
            "score": _r3(self.score),
            "conv_s": _r3(t - self.t0),
            "reason": reason,
        }
        if cue != "slow_down":
            d["stress_s"] = _r3(self.stress_n * self.hop)
            if cue != "settled" and self.first_cue_t < 0.0:
                self.first_cue_t = t
        self.cues += 1
        out.append(d)
        return d

    def _nudge_blocked(self, t, last, refractory):
        # "budget" and "refractory" drop the nudge; "gap" only delays it to a later window.
        if self.nudges >= self.budget:
            return "budget"
        if t - last < refractory:
            return "refractory"
        if t - self.last_nudge < self.min_gap:
            return "gap"
        return None

    def _nudge(self, t, cue, reason, out):
        self.nudges += 1
        self.last_nudge = t
        self._cue(t, cue, reason, out)

    def _baseline(self):
        b = self.base_sum / self.base_n if self.base_n >= self.n_base else self.base_default
        return b if b < self.base_max else self.base_max

    def _stress(self, t, x, out):
        self.score = x
        if x > self.peak:
            self.peak = x
        if self.base_n < self.n_base:
            self.base_n += 1
            self.base_sum += x
        above = x >= self.thr
        self.above_run = self.above_run + 1 if above else 0
        self.intense_run = self.intense_run + 1 if x >= self.intense else 0
        if self.stage == 0:
            if self.above_run == 0:
                return
            self.stress_n += 1
            if self.intense_run >= self.n_intense:
                self._manager(t, "very_intense", out)
            elif self.above_run >= self.n_emp:
                if self.intense_run > 0:
                    return  # very intense right now: wait a moment for call_manager instead
                blocked = self._nudge_blocked(t, self.last_emp, self.emp_refr)
                if blocked == "gap":
                    return  # try again next window
                # Dropped by budget or refractory, the episode still moves on, so the manager
                # can be called when stress carries on.
                self.stage = 1
                self.emp_score = x
                if blocked is None:
                    self.last_emp = t
                    self._nudge(t, "empathize", "stress_sustained", out)
            return
        if above:
            self.stress_n += 1
        if self.stage == 1:
            if above:
                self.sustain += 1
            self.rise_run = self.rise_run + 1 if x >= self.emp_score + self.rise else 0
            if self.intense_run >= self.n_intense:
                self._manager(t, "very_intense", out)
            elif self.sustain >= self.n_sustain:
                self._manager(t, "sustained", out)
            elif self.rise_run >= self.n_rise:
                self._manager(t, "rising", out)
            if self.stage == 2:
                return
        self.calm_run = self.calm_run + 1 if x <= self._baseline() + self.settle_margin else 0
        if self.calm_run >= self.n_settle:
            if self.first_cue_t >= 0.0:
                d = self._cue(t, "settled", "baseline", out)
                d["ttd_s"] = _r3(t - self.first_cue_t)
            self._reset_episode()

    def _manager(self, t, reason, out):
        # Once per conversation; never held back by the budget, refractory or gap.
        self.stage = 2
        if self.manager_called:
            return
        self.manager_called = True
        self._cue(t, "call_manager", reason, out)

    def _slow_down(self, t, out):
        reason = self._slow_reason()
        if reason is None:
            self.slow_run = 0
            return
        self.slow_run += 1
        if self.slow_run < self.n_slow:
            return
        blocked = self._nudge_blocked(t, self.last_slow, self.slow_refr)
        if blocked is None:
            self.last_slow = t
            self.slow_run = 0
            self._nudge(t, "slow_down", reason, out)

    def _slow_reason(self):
        staff = self.staff
        if not staff.known():
            return None
        cust = self.customer
        tense = self.score >= self.tense
        rising = staff.rate_rise() >= self.rate_rise or staff.db_rise() >= self.db_rise
        if cust.known():
            faster = staff.rate >= cust.rate + self.rate_margin
            louder = staff.db_rise() >= cust.db_rise() + self.db_margin
            cust_rising = cust.rate_rise() >= self.rate_rise or cust.db_rise() >= self.db_rise
        else:
            faster = louder = cust_rising = False
        if rising and (cust_rising or tense):
            return "mirroring"
        if faster and (rising or tense):
            return "faster"
        if louder and rising:
            return "louder"
        # The staff voice's stress mirrors the customer's only when it rose above what the
        # same voice read while the customer was calm.
        if (
            self.staff_smooth is not None
            and self.staff_score >= self.thr
            and self.staff_score > self.staff_calm + self.settle_margin
            and (tense or cust_rising)
        ):
            return "mirroring"
        return None


def event_fields(decision):
    """(event type, schema fields) of a decision, for firmware.events.Stamper.stamp."""
    fields = {}
    for k in decision:
        if k != "type" and k != "t":
            fields[k] = decision[k]
    return decision["type"], fields
