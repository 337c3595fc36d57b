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
#
# The counter and "none" modes, AttributionError and make_attribution (the Pi agent's) are in
# firmware/core/attribution_modes.py: the headset runs only HeadsetAttribution.


from array import array


class HeadsetAttribution:
    """Near-field wearer: staff when within near_field_db/2 of the wearer's level (or louder),
    customer (far field) below that, however much the customer raises their voice short of it:
    a shouting customer a metre away stays well below a mouth a few cm from the mic. The level
    is judged against the wearer's own learned level, never an absolute dBFS: it starts at
    headset_wearer_db (set per hardware profile) and follows only the windows judged staff,
    slowly, at most 12 dB either way, so a different mic gain is learnt but a loud customer is
    not. Too little speech in the window: unknown."""

    def __init__(self, settings=None):
        # start dB, near-field dB, min speech, the wearer's dB now: one array, so following the
        # wearer allocates nothing (a float attribute would be a new 32 B block per window).
        self._v = array("d", bytes(32))
        self.configure(settings)

    def configure(self, settings):
        """(New) settings, checked; the wearer's level starts over. Allocates nothing that
        outlives the call (firmware/core/policy.py Policy.configure says why)."""
        s = _settings(settings)
        v = self._v
        v[0] = s["headset_wearer_db"]
        v[1] = s["near_field_db"]
        v[2] = s["min_speech"]
        v[3] = v[0]

    @property
    def wearer_db(self):
        return self._v[3]

    def forget(self):
        """Back to the configured wearer level (a new audio stream)."""
        self._v[3] = self._v[0]

    def process(self, speech, level_db, f0_hz=0.0):
        v = self._v
        if speech < v[2]:
            return "unknown"
        w = v[3]
        if level_db >= w - v[1] / 2:
            # 0.05 per staff window: about 5 s of the wearer talking to move most of the way.
            w += 0.05 * (level_db - w)
            lo = v[0] - 12.0
            hi = v[0] + 12.0
            v[3] = lo if w < lo else (hi if w > hi else w)
            return "staff"
        return "customer"


def _settings(settings):
    # The validator is imported here, not at the top: the headset makes an attribution only
    # at boot and when a config arrives, and drops firmware.core.cue_settings in between
    # (firmware/headset/app.py). checked() gives the values key by key (no dict of all the settings).
    from firmware.core.cue_settings import SettingsError, checked

    s, errors = checked(settings or {})
    if errors:
        raise SettingsError("; ".join(errors))
    return s
