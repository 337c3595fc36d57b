# The stand-in stress score of a headset without a model file on flash: a logistic of
# loudness, pitch and high-frequency energy relative to the conversation's start, so that a
# device and the tests still run end to end; telemetry then reports model "placeholder" (its
# `name`) and no hash. Its own module, imported by firmware/core/pipeline.py only when there is no
# model, so a headset with one never has this code in its heap.
from math import exp


class Placeholder:
    name = "placeholder"

    def score(self, vec):
        # FEATURE_NAMES 4, 6 and 13: level, F0 and high-frequency balance relative to the
        # conversation's baseline.
        x = 0.35 * vec[4] + 0.25 * vec[6] + 0.2 * vec[13] - 2.5
        return 1.0 / (1.0 + exp(-x)) if x > -30 else 0.0
