# Audio -> window features -> stress score -> who is talking -> cue decisions, for the headset.
# The stages are the shared portable ones: firmware/core/features.py (issue 3), firmware/core/nnrt.py with
# the compact model file (issue 4), firmware/core/attribution.py and firmware/core/policy.py (issue 5).
# This module only wires them for a headset: near-field attribution, conversation baseline reset
# when the policy starts a conversation, and stream time offset by the device's uptime.
#
# Without a model file on flash the score is a PLACEHOLDER (firmware/core/placeholder.py: a logistic
# of loudness, pitch and high-frequency energy relative to the conversation's start) so that a
# device and the tests still run end to end; telemetry then reports model "placeholder" and no
# hash.
from firmware.core.attribution import HeadsetAttribution
from firmware.core.features import Features
from firmware.core.policy import Policy, event_fields

PLACEHOLDER_MODEL = "placeholder"


def policy_settings(cfg):
    """The cue-policy settings of a headset from the device config (config key "policy")."""
    p = cfg.get("policy") or {}
    s = dict(p)
    s["attribution"] = "headset"
    # EU mode may come top-level (device config) or inside policy (the companion sends both):
    # either one switches it on, never off.
    s["eu_mode"] = bool(cfg.get("eu_mode")) or bool(p.get("eu_mode"))
    return s


class Pipeline:
    policy: Policy  # set by configure() (bare annotations cost nothing in MicroPython)
    who: HeadsetAttribution

    def __init__(self, cfg, rand, model=None):
        if model is None:
            from firmware.core.placeholder import Placeholder

            model = Placeholder()
        self.model = model  # firmware.core.nnrt.Model, or the placeholder (name PLACEHOLDER_MODEL)
        # The feature buffers first (the largest long-lived blocks), before Policy() loads the
        # settings validator and makes its garbage: on a 96 KB heap a 2 KB block may not be
        # found after that.
        self.fx = Features()
        if cfg is not None:  # None: the caller configures it later (firmware/headset/app.py boot)
            self.configure(cfg, rand)
        self._t0 = None

    def configure(self, cfg, rand):
        """(New) cue-policy settings. The first call makes the policy and the attribution;
        later ones refill them in place (a config message: Policy.configure says why). The
        features and the model stay: their buffers are the largest long-lived blocks, and a
        heap cut up by hours of running may no longer have room for them. Call finish()
        first when a stream is open."""
        s = policy_settings(cfg)
        if getattr(self, "policy", None) is None:
            self.policy = Policy(s, rand)
            self.who = HeadsetAttribution(s)  # checked by Policy() above: no error here
        else:
            self.policy.configure(s)
            self.who.configure(s)

    def finish(self, t_s):
        """End of the stream (mute): close the open conversation; features, attribution and
        policy start over for the next stream. Returns [(type, fields)]."""
        out = []
        for d in self.policy.finish(t_s):
            out.append(event_fields(d))
        self.fx.reset()
        self.policy.reset()
        self.who.forget()
        self._t0 = None
        return out

    def process(self, samples, n, t_s):
        """The hop of `n` samples in `samples` (array('h')) ending at uptime t_s seconds.
        Returns [(event type, fields)] for the events the policy decided."""
        # A new list per hop, not one kept here: the events of the last hop must not stay
        # referenced after the caller is done with them (the heap in use would then depend
        # on whether the last hop had events).
        out: list = []
        if n != len(samples):
            return out  # a short read (end of a WAV on the host): not a whole hop
        if self._t0 is None:
            self._t0 = t_s - n / 16000
        for rec in self.fx.process(samples):
            score = self.model.score(rec["features"])
            speech = rec["speech"]
            level = rec["level_db"]
            speaker = self.who.process(speech, level, rec["f0_hz"])
            for d in self.policy.step(
                self._t0 + rec["t"], score, speaker, rec["rate"], level, speech
            ):
                if d.get("phase") == "start":  # conversation start (cues have no phase)
                    self.fx.new_conversation()  # the baseline is per conversation
                out.append(event_fields(d))
        return out
