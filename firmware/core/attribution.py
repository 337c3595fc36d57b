# Who is talking in a window: "staff", "customer" or "unknown". Portable (MicroPython and
# CPython), pure: per window it sees only the front end's speech fraction, level and pitch.
#
# Headset: the wearer's mouth is a few cm from the microphone, the customer about a metre
# away, so the wearer is 15-25 dB louder (near field); a customer who shouts can still reach
# the wearer's level, so the headset also learns the wearer's pitch as it hears them (no
# enrolment). Counter: both voices are at a similar distance, so a short enrolment at shift
# start learns the staff voice's level and pitch. The learnt and enrolled figures stay in RAM
# on the device: nothing that identifies a voice is stored or sent, and they are forgotten at
# the end of the shift or stream (forget()).
#
# When in doubt the answer is "unknown": the policy then gives no slow_down and (by default)
# no stress cue, which is the safe way to be wrong.
#
# The counter and "none" modes, AttributionError and make_attribution (the Pi agent's) are in
# firmware/core/attribution_modes.py: the headset runs only HeadsetAttribution.


import math
from array import array

# The figures below are written as integers where they can be: on the device every float
# constant in a function is an object in the heap, a small integer is not.


class HeadsetAttribution:
    """Near-field wearer, told apart by level and then by the wearer's own pitch.

    Level: a voice more than near_field_db/2 below the wearer's learned level is the customer
    (far field), however much they raise their voice short of it. The level is judged against
    the wearer's own learned level, never an absolute dBFS: it starts at headset_wearer_db (set
    per hardware profile) and follows only the windows judged staff, slowly, at most 12 dB
    either way, so a different mic gain is learnt but a loud customer is not.

    Pitch: a customer who shouts can reach the wearer's level, so a near-field level alone does
    not make the wearer. The headset learns the wearer's pitch as it hears them, as the counter
    mode's enrolment does but without one: the first 2 s of voiced speech within
    near_field_db/4 of the wearer's level (or louder) set its mean and spread, and after that
    every window judged staff moves them (a running mean over about 10 s). The wearer's pitch
    range is then the counter's: pitch_tol_st, or two of the voice's own standard deviations
    when it is livelier, widened upwards by half a semitone per dB the voice is louder than the
    wearer, at most level_tol_db/2 (speaking up raises the pitch too, the Lombard effect). A
    voice at the wearer's level but 2 semitones beyond that range is the customer. Within it,
    unvoiced, or before the pitch is learnt: the wearer, as by level alone. So a customer whose
    pitch is within that range (a similar voice, often the same sex) and who is as loud as the
    wearer is still read as the wearer, as before; and a wearer whose voice leaves their usual
    range by more than that (much livelier than in the last seconds) is read as the customer.
    Too little speech in the window: unknown. forget() (a new audio stream) drops what was
    learnt."""

    def __init__(self, settings=None):
        # start dB, near-field dB, min speech, the wearer's dB now, the wearer's mean pitch
        # (semitones re 100 Hz), voiced windows it was learnt from (capped at 40),
        # pitch_tol_st, level_tol_db, the variance of the wearer's pitch: one array, so
        # following the wearer allocates nothing (a float attribute would be a new 32 B block
        # per window).
        self._v = array("d", bytes(72))
        self.configure(settings)

    def configure(self, settings):
        """(New) settings, checked; the wearer's level and pitch start over. Allocates nothing
        that outlives the call (firmware/core/policy.py Policy.configure says why)."""
        s = _settings(settings)
        v = self._v
        v[0] = s["headset_wearer_db"]
        v[1] = s["near_field_db"]
        v[2] = s["min_speech"]
        v[6] = s["pitch_tol_st"]
        v[7] = s["level_tol_db"]
        self.forget()

    @property
    def wearer_db(self):
        return self._v[3]

    @property
    def wearer_hz(self):
        """The wearer's learnt pitch in Hz, 0 until 2 s of it were heard."""
        v = self._v
        return 100 * math.exp(v[4] * math.log(2) / 12) if v[5] >= 8 else 0

    def forget(self):
        """Back to the configured wearer level, the wearer's pitch unknown (a new audio
        stream)."""
        v = self._v
        v[3] = v[0]
        v[4] = 0
        v[5] = 0
        v[8] = 0

    def process(self, speech, level_db, f0_hz=0):
        v = self._v
        if speech < v[2]:
            return "unknown"
        w = v[3]
        if level_db < w - v[1] / 2:
            return "customer"
        if f0_hz > 0:
            # Semitones re 100 Hz. 8 voiced near-field windows (2 s at the default 0.25 s hop)
            # set the wearer's pitch before it is used; after that the running mean remembers
            # at most 40 windows (about 10 s of the wearer talking).
            st = 12 * math.log(f0_hz / 100) / math.log(2)
            n = v[5]
            if n >= 8:
                d = st - v[4]
                tol = 2 * math.sqrt(v[8])  # a lively voice: two of its standard deviations
                if tol < v[6]:
                    tol = v[6]
                tol += 2  # 2 semitones beyond the wearer's range is another voice
                if d < 0:
                    d = -d
                elif level_db > w:
                    # Speaking up lifts the pitch: half a semitone per dB louder than the
                    # wearer's level, at most level_tol_db/2.
                    up = level_db - w
                    tol += (up if up < v[7] else v[7]) / 2
                if d > tol:
                    return "customer"  # the wearer's level, another voice
            if n >= 8 or level_db >= w - v[1] / 4:
                if n < 40:
                    n += 1
                    v[5] = n
                # Running mean and variance (Welford's update, weights 1/n).
                d = st - v[4]
                v[4] += d / n
                v[8] += (d * (st - v[4]) - v[8]) / n
        # 0.05 per staff window: about 5 s of the wearer talking to move most of the way.
        w += 0.05 * (level_db - w)
        lo = v[0] - 12
        hi = v[0] + 12
        v[3] = lo if w < lo else (hi if w > hi else w)
        return "staff"


def _settings(settings):
    # The validator is imported here, not at the top: the headset makes an attribution only
    # at boot and when a config arrives, and drops firmware.core.cue_settings in between
    # (firmware/headset/app.py). checked() gives the values key by key (no dict of all the settings).
    from firmware.core.cue_settings import SettingsError, checked

    s, errors = checked(settings or {})
    if errors:
        raise SettingsError("; ".join(errors))
    return s
