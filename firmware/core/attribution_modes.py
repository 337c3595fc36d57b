# Speaker attribution modes a headset does not run: counter enrolment and "none", plus
# AttributionError and make_attribution (used by the Pi agent); firmware/core/attribution.py has
# the module comment and the headset's mode. Portable (MicroPython and CPython), pure.
import math

from firmware.core.attribution import HeadsetAttribution, _settings


class AttributionError(ValueError):
    pass


class NoAttribution:
    """attribution = "none": every window is "unknown"."""

    def __init__(self, settings=None):
        pass

    def process(self, speech, level_db, f0_hz):
        return "unknown"


class CounterAttribution:
    """Counter microphone: enrol the staff voice at shift start (enrol() per window while
    only the staff member speaks, then finish_enrolment()), then label windows by pitch
    distance (semitones) and level against that profile. Staff: within level_tol of the
    enrolled level and within the pitch tolerance, which a voice up to level_tol louder
    widens upwards by at most level_tol/2 semitones (a staff member speaking up). Customer:
    2 semitones beyond that range, or level_tol + 4 dB from the enrolled level either way.
    Unknown in between."""

    def __init__(self, settings=None):
        s = _settings(settings)
        self.min_speech = s["min_speech"]
        self.pitch_tol = s["pitch_tol_st"]
        self.level_tol = s["level_tol_db"]
        self.n_min = int(s["enrol_min_s"] / s["hop_s"] + 0.5)
        self.hop = s["hop_s"]
        # The profile: voiced windows enrolled, running mean and M2 of their pitch
        # (semitones re 100 Hz), mean level; after finish_enrolment() the pitch tolerance.
        self._e = [0, 0.0, 0.0, 0.0, 0.0]
        self.forget()

    def forget(self):
        """Drop the enrolled profile (end of shift, or before a new enrolment)."""
        self.enrolled = False
        e = self._e
        e[0] = 0
        e[1] = e[2] = e[3] = 0.0
        e[4] = self.pitch_tol

    def enrol(self, speech, level_db, f0_hz):
        """Add one window of the staff member speaking alone; returns voiced seconds so far."""
        e = self._e
        if speech >= self.min_speech and f0_hz > 0.0:
            e[0] += 1
            st = 12.0 * math.log(f0_hz / 100.0) / math.log(2.0)
            d = st - e[1]
            e[1] += d / e[0]
            e[2] += d * (st - e[1])
            e[3] += (level_db - e[3]) / e[0]
        return e[0] * self.hop

    def finish_enrolment(self):
        e = self._e
        n = e[0]
        if n < self.n_min:
            raise AttributionError(
                "enrolment heard %.1f s of voiced staff speech, it needs %.1f s: keep talking "
                "(alone, at the counter) until the LED turns green, or lower enrol_min_s"
                % (n * self.hop, self.n_min * self.hop)
            )
        sd = math.sqrt(e[2] / (n - 1)) if n > 1 else 0.0
        # A lively voice moves around its mean: allow two of its own standard deviations.
        e[4] = self.pitch_tol if self.pitch_tol > 2.0 * sd else 2.0 * sd
        self.enrolled = True

    def process(self, speech, level_db, f0_hz):
        if not self.enrolled or speech < self.min_speech:
            return "unknown"
        e = self._e
        lt = self.level_tol
        louder = level_db - e[3]  # > 0: louder than the staff voice was at enrolment
        off = louder if louder > 0.0 else -louder
        # Far from the staff's level either way is not the staff at their place: much quieter
        # is the customer across the counter, 10 dB louder is shouting, and at a counter the
        # one shouting is the customer far more often than the staff member.
        far = off >= lt + 4.0
        if f0_hz <= 0.0:
            return "customer" if far else "unknown"
        p = 12.0 * math.log(f0_hz / 100.0) / math.log(2.0) - e[1]
        tol = e[4]
        if p < 0.0:
            p = -p
            extra = 0.0
        else:
            # Speaking up lifts the pitch too (Lombard effect, about half a semitone per dB),
            # only within the level a staff member speaking up reaches (level_tol above the
            # enrolment): a louder voice does not buy a wider pitch range.
            extra = 0.5 * (louder if louder < lt else lt) if louder > 0.0 else 0.0
        tol += extra
        if off <= lt and p <= tol:
            return "staff"
        # Two semitones beyond that range is another voice, however loud it is.
        if far or p >= tol + 2.0:
            return "customer"
        return "unknown"


def make_attribution(settings=None):
    """The attribution the settings ask for ("counter", "headset" or "none")."""
    kind = _settings(settings)["attribution"]
    if kind == "headset":
        return HeadsetAttribution(settings)
    if kind == "counter":
        return CounterAttribution(settings)
    return NoAttribution(settings)
