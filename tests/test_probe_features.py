"""The feature probe's candidate features (models/probe_features.py) on signals whose answer is
known: a measurement is only as good as what it measures."""

from __future__ import annotations

import numpy as np

from models import features as fe
from models import probe_features as pf

RATE = fe.SAMPLE_RATE


def _pulses(f0: float, seconds: float = 1.0, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    """A glottal-like pulse train at f0 (each period a decaying 700 Hz ring), int16; with
    `jitter` each period's length varies by that fraction at random."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    x = np.zeros(n)
    ring = np.exp(-np.arange(120) / 25.0) * np.cos(2 * np.pi * 700 * np.arange(120) / RATE)
    t = 0.0
    while t < n - 120:
        i = int(t)
        x[i : i + 120] += ring
        t += RATE / f0 * (1.0 + jitter * rng.uniform(-1, 1))
    return np.round(x / np.abs(x).max() * 8000).astype(np.int16)


def _quiet_first(x: np.ndarray) -> np.ndarray:
    """0.5 s of faint noise, then `x`: the device's gate learns its noise floor before speech."""
    noise = np.random.default_rng(1).normal(0, 30, RATE // 2)
    return np.concatenate([np.round(noise).astype(np.int16), x])


def _frames(x: np.ndarray) -> dict[str, np.ndarray]:
    tap = pf._Tap()
    tap.process(x)
    return tap.frames


def test_bands_partition_the_spectrum_and_cepstra_ignore_level():
    m = pf.band_matrix()
    assert m.shape == (pf.N_BANDS, pf.FFT // 2 + 1)
    assert m.sum(axis=0).max() == 1  # no FFT bin counted twice
    d = pf.dct_matrix()
    assert np.allclose(d @ d.T, np.eye(pf.N_CEP))
    assert np.allclose(d @ np.ones(pf.N_BANDS), 0.0)  # a level change moves no cepstrum


def test_a_tone_has_its_centroid_at_its_frequency():
    t = np.arange(RATE) / RATE
    x = np.round(8000 * np.sin(2 * np.pi * 1250 * t)).astype(np.int16)
    nf = x.size // fe.FRAME
    got = pf.frame_extras(x, np.zeros(nf), np.zeros(nf, dtype=bool))
    assert np.all(np.abs(got["centroid"] - 1250) < 60)
    assert np.all(np.argmax(got["bands"], axis=1) == 3)  # 1000-1500 Hz
    assert np.all(np.isnan(got["jitter"]))  # no voiced frame, no perturbation


def test_jitter_grows_with_period_perturbation():
    steady = _quiet_first(_pulses(150.0))
    shaky = _quiet_first(_pulses(150.0, jitter=0.03))
    out = []
    for x in (steady, shaky):
        fr = _frames(x)
        assert fr["voiced"].sum() > 30
        got = pf.frame_extras(x, fr["lag"], fr["voiced"])
        out.append((np.nanmean(got["jitter"]), np.nanmean(got["periodicity"])))
    (j0, p0), (j1, p1) = out
    assert j0 < 0.015 < j1
    assert p0 > 0.9 > p1


def test_window_pitch_slope_follows_a_glide():
    # a rising then steady voice: the window's pitch slope is positive and near the glide's
    n = RATE
    f = np.linspace(120.0, 180.0, n)  # 7 semitones per second
    phase = 2 * np.pi * np.cumsum(f) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    x = _quiet_first(np.round(x / np.abs(x).max() * 8000).astype(np.int16))
    fr = _frames(x)
    fx = pf.frame_extras(x, fr["lag"], fr["voiced"])
    end = x.size // fe.FRAME - 1
    w = dict(zip(pf.EXTRA_NAMES, pf.window_extras(fx, fr, end), strict=True))
    assert 4.0 < w["f0_slope_st_s"] < 10.0
    assert w["band0_db"] > w["band7_db"]


def test_relative_columns_subtract_the_lead_in_mean():
    ext = np.ones((3, len(pf.EXTRA_NAMES)), np.float32)
    lead = np.full((2, len(pf.EXTRA_NAMES)), 0.25, np.float32)
    got = pf.relative_to_lead_in(ext, lead)
    rel = [pf.EXTRA_NAMES.index(n) for n in pf.GROUPS["rel"]]
    others = [i for i in range(len(pf.EXTRA_NAMES)) if i not in rel]
    assert np.allclose(got[:, rel], 0.75)
    assert np.allclose(got[:, others], 1.0)
    assert np.array_equal(pf.relative_to_lead_in(ext, lead[:0]), ext)


def test_egemaps_groups_partition_the_88_functionals():
    cols = sorted(i for g in pf.EGEMAPS_GROUPS.values() for i in g)
    assert cols == list(range(88))


def test_rise_and_fall_rates_count_only_consecutive_valid_frames():
    per_s = fe.SAMPLE_RATE / fe.FRAME  # frames per second
    values = np.array([0.0, 1.0, 3.0, 2.0, 10.0, 9.0])
    ok = np.array([True, True, True, True, False, True])
    rise, fall = pf.rise_fall(values, ok)
    assert rise == 1.5 * per_s  # +1, +2 (the jump to the invalid frame does not count)
    assert fall == 1.0 * per_s  # -1
    assert pf.rise_fall(values, np.zeros(6, dtype=bool)) == (0.0, 0.0)
