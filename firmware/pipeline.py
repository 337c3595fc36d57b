# Audio -> window features -> stress score -> who is talking -> cue decisions, for the headset.
# The stages are the shared portable ones: firmware/features.py (issue 3), firmware/nnrt.py with
# the compact model file (issue 4), firmware/attribution.py and firmware/policy.py (issue 5).
# This module only wires them for a headset: near-field attribution, conversation baseline reset
# when the policy starts a conversation, and stream time offset by the device's uptime.
#
# Without a model file on flash the score is a PLACEHOLDER (a logistic of loudness, pitch and
# high-frequency energy relative to the conversation's start) so that a device and the tests
# still run end to end; telemetry then reports model "placeholder" and no hash.
from math import exp

from firmware.attribution import HeadsetAttribution
from firmware.features import Features
from firmware.policy import Policy, event_fields

PLACEHOLDER_MODEL = "placeholder"
# Indices in firmware.features.FEATURE_NAMES used by the placeholder score.
_LEVEL_REL = 4
_F0_REL = 6
_HF_REL = 13


def policy_settings(cfg):
    """The cue-policy settings of a headset from the device config (config key "policy")."""
    s = {}
    p = cfg.get("policy") or {}
    for k in p:
        s[k] = p[k]
    s["attribution"] = "headset"
    # EU mode may come top-level (device config) or inside policy (the companion sends both):
    # either one switches it on, never off.
    s["eu_mode"] = bool(cfg.get("eu_mode")) or bool(p.get("eu_mode"))
    return s


class Pipeline:
    def __init__(self, cfg, rand, model=None):
        self.rand = rand
        self.model = model  # firmware.nnrt.Model, or None for the placeholder score
        self.policy = Policy(policy_settings(cfg), rand)
        self.who = HeadsetAttribution(self.policy.settings)
        self.fx = Features()
        self._out = []
        self._t0 = None
        self.last_score = 0.0

    def finish(self, t_s):
        """End of the stream (mute): close the open conversation. Returns [(type, fields)]."""
        out = [event_fields(d) for d in self.policy.finish(t_s)]
        self.reset()
        return out

    def reset(self):
        """A new audio stream (after mute): features, attribution and policy start over."""
        self.fx.reset()
        self.policy.reset()
        self.who = HeadsetAttribution(self.policy.settings)
        self._t0 = None

    def score(self, vec):
        if self.model is not None:
            return self.model.score(vec)
        x = 0.35 * vec[_LEVEL_REL] + 0.25 * vec[_F0_REL] + 0.2 * vec[_HF_REL] - 2.5
        return 1.0 / (1.0 + exp(-x)) if x > -30 else 0.0

    def process(self, samples, n, t_s):
        """The hop of `n` samples in `samples` (array('h')) ending at uptime t_s seconds.
        Returns [(event type, fields)] for the events the policy decided."""
        out = self._out
        out.clear()
        if n != len(samples):
            return out  # a short read (end of a WAV on the host): not a whole hop
        if self._t0 is None:
            self._t0 = t_s - n / 16000
        for rec in self.fx.process(samples):
            t = self._t0 + rec["t"]
            score = self.score(rec["features"])
            self.last_score = score
            speech = rec["speech"]
            level = rec["level_db"]
            speaker = self.who.process(speech, level, rec["f0_hz"])
            for d in self.policy.step(t, score, speaker, rec["rate"], level, speech):
                if d["type"] == "conversation" and d["phase"] == "start":
                    self.fx.new_conversation()  # the baseline is per conversation
                out.append(event_fields(d))
        return out
