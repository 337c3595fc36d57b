"""The feature order is written twice, once per runtime (numpy cannot import the viper module):
the MicroPython extractor, run on the real interpreter, must name the same features in the same
order as the numpy reference and the shipped model."""

from __future__ import annotations

from models.features import FEATURE_NAMES


def test_micropython_extractor_names_the_same_features_in_order(mpy):
    out = mpy("from firmware.core import features\nprint(','.join(features.feature_names()))", heapsize="128K")
    assert out.stdout.strip().split(",") == list(FEATURE_NAMES)
