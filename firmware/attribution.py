# Who is talking in a window: "staff", "customer" or "unknown". Portable (MicroPython and
# CPython), pure: per window it sees only the front end's speech fraction, level and pitch.
#
# Headset: the wearer's mouth is a few cm from the microphone, the customer about a metre
# away, so the wearer is 15-25 dB louder (near field). Counter: both voices are at a similar
# distance, so a short enrolment at shift start learns the staff voice's level and pitch.
# The enrolled figures stay in RAM on the device: nothing that identifies a voice is stored
# or sent, and they are forgotten at the end of the shift (forget()).
#
# When in doubt the answer is "unknown": the policy then gives no slow_down and (by default)
# no stress cue, which is the safe way to be wrong.
import math

from firmware.cue_settings import SettingsError, validate_settings


class AttributionError(ValueError):
    pass


_ST_PER_DB = 0.5
_MAX_EXTRA_ST = 6.0


def _semitones(f0_hz):
    return 12.0 * math.log(f0_hz / 100.0) / math.log(2.0)


class NoAttribution:
    """attribution = "none": every window is "unknown"."""

    def __init__(self, settings=None):
        pass

    def process(self, speech, level_db, f0_hz):
        return "unknown"


class HeadsetAttribution:
    """Near-field wearer: staff when within near_field_db/2 of the wearer's level, customer
    when at least near_field_db below it, unknown in between. The wearer's level starts at
    headset_wearer_db (set per hardware profile) and follows the wearer's own windows slowly,
    at most 12 dB either way, so a different mic gain is learnt but a loud customer is not."""

    _ADAPT = 0.05  # per staff window: about 5 s of the wearer talking to move most of the way
    _RANGE_DB = 12.0

    def __init__(self, settings=None):
        s = _settings(settings)
        self.start_db = s["headset_wearer_db"]
        self.near = s["near_field_db"]
        self.min_speech = s["min_speech"]
        self.wearer_db = self.start_db

    def process(self, speech, level_db, f0_hz=0.0):
        if speech < self.min_speech:
            return "unknown"
        w = self.wearer_db
        if level_db >= w - self.near / 2:
            w += self._ADAPT * (level_db - w)
            lo = self.start_db - self._RANGE_DB
            hi = self.start_db + self._RANGE_DB
            self.wearer_db = lo if w < lo else (hi if w > hi else w)
            return "staff"
        if level_db <= w - self.near:
            return "customer"
        return "unknown"


class CounterAttribution:
    """Counter microphone: enrol the staff voice at shift start (enrol() per window while
    only the staff member speaks, then finish_enrolment()), then label windows by pitch
    distance (semitones) and level against that profile."""

    def __init__(self, settings=None):
        s = _settings(settings)
        self.min_speech = s["min_speech"]
        self.pitch_tol = s["pitch_tol_st"]
        self.level_tol = s["level_tol_db"]
        self.n_min = int(s["enrol_min_s"] / s["hop_s"] + 0.5)
        self.hop = s["hop_s"]
        self.forget()

    def forget(self):
        """Drop the enrolled profile (end of shift, or before a new enrolment)."""
        self.enrolled = False
        self._n = 0
        self._st_mean = 0.0
        self._st_m2 = 0.0
        self._db_mean = 0.0
        self.staff_st = 0.0
        self.staff_db = 0.0
        self.tol = self.pitch_tol

    def enrol(self, speech, level_db, f0_hz):
        """Add one window of the staff member speaking alone; returns voiced seconds so far."""
        if speech >= self.min_speech and f0_hz > 0.0:
            self._n += 1
            st = _semitones(f0_hz)
            d = st - self._st_mean
            self._st_mean += d / self._n
            self._st_m2 += d * (st - self._st_mean)
            self._db_mean += (level_db - self._db_mean) / self._n
        return self._n * self.hop

    def finish_enrolment(self):
        if self._n < self.n_min:
            raise AttributionError(
                "enrolment heard %.1f s of voiced staff speech, it needs %.1f s: keep talking "
                "(alone, at the counter) until the LED turns green, or lower enrol_min_s"
                % (self._n * self.hop, self.n_min * self.hop)
            )
        sd = math.sqrt(self._st_m2 / (self._n - 1)) if self._n > 1 else 0.0
        self.staff_st = self._st_mean
        self.staff_db = self._db_mean
        # A lively voice moves around its mean: allow two of its own standard deviations.
        self.tol = self.pitch_tol if self.pitch_tol > 2.0 * sd else 2.0 * sd
        self.enrolled = True

    def process(self, speech, level_db, f0_hz):
        if not self.enrolled or speech < self.min_speech:
            return "unknown"
        quieter = self.staff_db - level_db  # > 0: quieter than the staff voice usually is
        if f0_hz <= 0.0:
            # Unvoiced: only a much quieter voice is clearly someone else.
            return "customer" if quieter >= self.level_tol + 4.0 else "unknown"
        p = _semitones(f0_hz) - self.staff_st
        tol = self.tol
        if p < 0.0:
            p = -p
        elif quieter < 0.0:
            # A raised voice is also a higher one (Lombard effect, about half a semitone per
            # dB): a staff member who speaks up under pressure stays "staff".
            extra = -quieter * _ST_PER_DB
            tol += extra if extra < _MAX_EXTRA_ST else _MAX_EXTRA_ST
        if p <= tol and quieter <= self.level_tol:
            return "staff"
        if p >= tol + 2.0 or quieter >= self.level_tol + 4.0:
            return "customer"
        return "unknown"


def _settings(settings):
    s, errors = validate_settings(settings or {})
    if errors:
        raise SettingsError("; ".join(errors))
    return s


def make_attribution(settings=None):
    """The attribution the settings ask for ("counter", "headset" or "none")."""
    kind = _settings(settings)["attribution"]
    if kind == "headset":
        return HeadsetAttribution(settings)
    if kind == "counter":
        return CounterAttribution(settings)
    return NoAttribution(settings)
