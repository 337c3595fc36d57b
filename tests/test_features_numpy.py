"""numpy feature reference (models/features.py): known pitch and loudness, chunk-size and gain
invariance, and sane values on silence, clipping, DC offset and noise."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from models.bench_features import load_int16, synthetic_voice
from models.features import (
    FEATURE_NAMES,
    N_FEATURES,
    FeatureExtractor,
    WindowRecord,
    extract,
)

IDX = {n: i for i, n in enumerate(FEATURE_NAMES)}


def rows(recs: list[WindowRecord]) -> np.ndarray:
    return np.array([[r.t, r.speech, r.level_db, r.f0_hz, r.rate, *r.features] for r in recs])


def test_api_shapes_and_window_times() -> None:
    x = synthetic_voice(150, seconds=3.0, lead_s=0.5)
    X, recs = extract(x)
    assert X.shape == (len(recs), N_FEATURES) and X.dtype == np.float32
    # 3.5 s -> windows end at 1.0, 1.25, ..., 3.5 s
    assert [r.t for r in recs] == [1.0 + 0.25 * i for i in range(11)]
    assert set(recs[0].as_dict()) == {"t", "speech", "level_db", "f0_hz", "rate", "features"}
    assert extract(np.zeros(15000, dtype=np.int16))[0].shape == (0, N_FEATURES)


@pytest.mark.parametrize("f0", [85.0, 120.0, 180.0, 250.0, 330.0, 440.0])
def test_known_pitch(f0: float) -> None:
    _, recs = extract(synthetic_voice(f0, -30.0, seconds=2.5))
    steady = [r for r in recs if r.t >= 1.5]  # windows fully inside the tone
    assert steady
    for r in steady:
        assert r.f0_hz == pytest.approx(f0, rel=0.02)
        assert r.features[IDX["voiced"]] >= 0.9
        assert r.features[IDX["f0_sd_st"]] < 0.2


@pytest.mark.parametrize("level", [-6.0, -20.0, -35.0, -50.0])
def test_known_loudness_of_a_sine(level: float) -> None:
    _, recs = extract(synthetic_voice(200, level, seconds=2.5, harmonics=False))
    for r in (r for r in recs if r.t >= 1.5):
        assert r.level_db == pytest.approx(level, abs=0.2)
        assert r.speech == 1.0
        assert r.features[IDX["level_sd_db"]] < 0.1


def test_syllable_rate_and_pauses() -> None:
    X, recs = extract(synthetic_voice(150, -30, seconds=4.0, syllable_hz=4.0))
    late = X[[r.t >= 2.0 for r in recs]]
    assert np.all(late[:, IDX["rate"]] == 4.0)  # 4 syllables per 1 s window
    assert np.all((late[:, IDX["pause"]] > 0.2) & (late[:, IDX["pause"]] < 0.45))
    assert np.all((late[:, IDX["speech"]] > 0.5) & (late[:, IDX["speech"]] < 0.7))


def chunked(x: np.ndarray, size: int) -> np.ndarray:
    fx = FeatureExtractor()
    recs = []
    for i in range(0, len(x), size):
        recs += fx.process(x[i : i + size])
    return rows(recs)


def test_chunk_size_invariance_synthetic() -> None:
    x = synthetic_voice(170, -25, seconds=4.0, syllable_hz=3.0)
    whole = rows(FeatureExtractor().process(x))
    for size in (1, 7, 160, 399, 400, 401, 4000):
        assert np.array_equal(chunked(x, size), whole), size
    # little-endian bytes in odd pieces (the device gets bytes from I2S)
    fx = FeatureExtractor()
    raw = x.astype("<i2").tobytes()
    recs = []
    for i in range(0, len(raw), 1000):
        recs += fx.process(raw[i : i + 1000])
    assert np.array_equal(rows(recs), whole)


def test_chunk_size_invariance_ravdess(ravdess) -> None:
    x = load_int16(ravdess / "Actor_05/03-01-05-02-01-01-05.flac")
    whole = rows(FeatureExtractor().process(x))
    assert len(whole) >= 8
    for size in (1, 333, 4096):
        assert np.array_equal(chunked(x, size), whole), size


def test_reset_and_new_conversation() -> None:
    x = synthetic_voice(150, -30, seconds=3.0, syllable_hz=3.0)
    fx = FeatureExtractor()
    first = rows(fx.process(x))
    fx.reset()
    assert np.array_equal(rows(fx.process(x)), first)
    # A new conversation keeps the stream going but its baseline restarts: the first speech
    # window after it is relative to nothing (0) even after a louder start.
    fx = FeatureExtractor()
    fx.process(synthetic_voice(150, -10, seconds=3.0, syllable_hz=3.0))
    fx.new_conversation()
    recs = fx.process(synthetic_voice(150, -30, seconds=1.0, lead_s=0.0, syllable_hz=3.0))
    assert recs[0].features[IDX["level_rel_db"]] == 0.0


def _clip_means(x: np.ndarray) -> np.ndarray:
    X, _ = extract(x)
    s = X[:, IDX["speech"]] >= 0.25
    return X[s].mean(axis=0) if s.any() else X.mean(axis=0)


def _gain(x: np.ndarray, db: float) -> np.ndarray:
    return np.clip(np.round(x * 10 ** (db / 20)), -32768, 32767).astype(np.int16)


# Features where higher means more stress-like, and the absolute shift always allowed.
STRESS_DIRECTION_TOL = {
    "level_sd_db": 0.25,
    "level_range_db": 0.5,
    "level_rel_db": 0.25,
    "f0_st": 0.25,
    "f0_range_st": 0.25,
    "f0_sd_st": 0.15,
    "f0_delta_st": 0.1,
    "hf_db": 0.25,
    "hf2_db": 0.25,
    "rate": 0.1,
    "aperiodicity": 0.01,
}


def test_gain_does_not_look_like_stress(ravdess) -> None:
    """+/-12 dB on calm/neutral clips (+12 dB clips where it must) moves no stress-relevant
    feature towards stress by more than a third of the calm -> angry/fearful difference."""
    with open(ravdess / "manifest.csv", newline="") as f:
        man = list(csv.DictReader(f))
    calm = [r for r in man if r["label"] in ("neutral", "calm")][::8]
    stress = [r for r in man if r["label"] in ("angry", "fearful")][::8]
    calm_x = [load_int16(ravdess / r["path"]) for r in calm]
    base = np.array([_clip_means(x) for x in calm_x])
    stress_m = np.array([_clip_means(load_int16(ravdess / r["path"])) for r in stress])
    gap = stress_m.mean(axis=0) - base.mean(axis=0)
    for db in (-12.0, 12.0):
        shift = np.array([_clip_means(_gain(x, db)) for x in calm_x]).mean(axis=0) - base.mean(
            axis=0
        )
        for name, tol in STRESS_DIRECTION_TOL.items():
            i = IDX[name]
            towards = shift[i] * np.sign(gap[i])
            assert towards <= max(abs(gap[i]) / 3, tol), (db, name, shift[i], gap[i])


def test_gain_invariance_without_clipping() -> None:
    x = synthetic_voice(140, -30, seconds=4.0, syllable_hz=3.0, seed=3)
    X0 = extract(x)[0]
    for db in (-12.0, 12.0):
        X = extract(_gain(x, db))[0]
        d = np.abs(X - X0).max(axis=0)
        assert d[IDX["speech"]] == 0 and d[IDX["rate"]] == 0
        for name in ("f0_st", "hf_db", "hf2_db", "lf_db", "level_sd_db", "level_rel_db"):
            assert d[IDX[name]] < 0.3, (db, name, d[IDX[name]])


def _sane(X: np.ndarray, recs: list[WindowRecord]) -> None:
    assert np.all(np.isfinite(X))
    for r in recs:
        assert all(np.isfinite([r.t, r.speech, r.level_db, r.f0_hz, r.rate]))
        assert 0.0 <= r.speech <= 1.0 and r.f0_hz >= 0.0 and r.rate >= 0.0
        assert -141.5 < r.level_db <= 3.1  # digital silence reads -141.4 dBFS (A floored at 1)
    assert np.all((X[:, IDX["voiced"]] >= 0) & (X[:, IDX["voiced"]] <= 1))
    assert np.all((X[:, IDX["pause"]] >= 0) & (X[:, IDX["pause"]] <= 1))
    assert np.all((X[:, IDX["aperiodicity"]] >= 0) & (X[:, IDX["aperiodicity"]] <= 1))


def test_silence() -> None:
    X, recs = extract(np.zeros(3 * 16000, dtype=np.int16))
    _sane(X, recs)
    assert np.all(X == 0.0) and all(r.f0_hz == 0.0 and r.speech == 0.0 for r in recs)


def test_pure_noise_is_not_speech() -> None:
    rng = np.random.default_rng(1)
    for level in (-60.0, -30.0, -10.0):
        x = _gain(rng.normal(0, 32768, 5 * 16000) * 10 ** (level / 20), 0)
        X, recs = extract(x)
        _sane(X, recs)
        assert X[:, IDX["speech"]].mean() < 0.05, level
        assert X[:, IDX["voiced"]].mean() < 0.05


def test_clipping() -> None:
    x = synthetic_voice(160, -30, seconds=3.0, syllable_hz=3.0)
    X, recs = extract(_gain(x, 40))  # hard-clipped square-ish wave
    _sane(X, recs)
    late = [r for r in recs if r.t >= 1.5]
    assert all(r.f0_hz == pytest.approx(160, rel=0.03) for r in late if r.f0_hz)
    assert X[:, IDX["speech"]].max() > 0.5


def test_dc_offset() -> None:
    x = synthetic_voice(160, -30, seconds=3.0, syllable_hz=3.0)
    X0, _ = extract(x)
    X, recs = extract(np.clip(x.astype(np.int32) + 6000, -32768, 32767).astype(np.int16))
    _sane(X, recs)
    # the frame mean is removed and the pitch path uses differences: DC changes nothing much
    late = slice(2, None)  # the DC step at the stream start settles within a second
    assert np.allclose(X[late], X0[late], atol=0.3)


def test_bad_float_input() -> None:
    x = synthetic_voice(160, -30, seconds=2.0).astype(np.float64) / 32768
    x[100:200] = np.nan
    x[300] = np.inf
    x[400:500] = 5.0  # out of range: clipped
    X, recs = extract(x)
    _sane(X, recs)
    with pytest.raises(ValueError, match="mono"):
        extract(np.zeros((2, 16000)))


def test_other_sample_rates_are_resampled() -> None:
    from scipy.signal import resample_poly

    x = synthetic_voice(200, -25, seconds=2.5, harmonics=False)
    x44 = np.round(resample_poly(x.astype(float), 441, 160)).astype(np.int16)
    _, recs = extract(x44, sr=44100)
    assert recs[-1].f0_hz == pytest.approx(200, rel=0.02)
    assert recs[-1].level_db == pytest.approx(-25, abs=0.3)


def two_voices() -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Staff (110 Hz) and customer (220 Hz) take turns; the customer's last turn is raised to
    320 Hz and 8 dB louder. Returns the audio and (start s, end s, expected f0_rel_st) turns."""
    turns = [(110, -30), (220, -30), (110, -30), (220, -30), (110, -30), (320, -22)]
    parts, spans, t = [], [], 0.5
    for i, (f0, lv) in enumerate(turns):
        parts.append(synthetic_voice(f0, lv, seconds=3.0, lead_s=0.5, syllable_hz=3.0, seed=i))
        expect = 12 * np.log2(320 / 220) if f0 == 320 else 0.0
        spans.append((t, t + 3.0, expect))
        t += 3.5
    return np.concatenate(parts), spans


def test_baseline_keeps_two_voices_apart() -> None:
    x, spans = two_voices()
    _, recs = extract(x)
    for start, end, expect in spans:
        inside = [r for r in recs if start + 1.0 <= r.t <= end and r.features[IDX["voiced"]] > 0]
        assert inside
        rel = np.array([r.features[IDX["f0_rel_st"]] for r in inside])
        assert np.all(np.abs(rel - expect) < 1.0), (start, expect, rel)
    raised = [r for r in recs if r.t >= spans[-1][0] + 1.5]
    assert np.mean([r.features[IDX["level_rel_db"]] for r in raised]) > 5.0


def test_opensmile_is_never_a_runtime_import() -> None:
    """openSMILE's licence forbids shipping it: only the benchmark may import it."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from models.features import extract\n"
        "import models.bench_features\n"
        "extract(np.zeros(32000, dtype=np.int16))\n"
        "assert 'opensmile' not in sys.modules, 'opensmile imported at runtime'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_odd_byte_chunk_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        FeatureExtractor().process(b"\x00\x01\x02")


def _vowel(f0: np.ndarray, formants: list[tuple[float, float]]) -> np.ndarray:
    """Glottal pulse train along the F0 contour, tilted and shaped by formant resonators."""
    from scipy.signal import lfilter

    phase = np.cumsum(f0 / 16000)
    x = lfilter([1.0], [1.0, -0.95], np.diff(np.floor(phase), prepend=0.0))
    for f, bw in formants:
        r, th = np.exp(-np.pi * bw / 16000), 2 * np.pi * f / 16000
        x = lfilter([1 - r], [1.0, -2 * r * np.cos(th), r * r], x)
    return 0.3 * x / np.abs(x).max()


def test_pitch_tracks_gliding_vowels_in_noise() -> None:
    """Vowel-like voices gliding over 85-440 Hz, pink noise at 10-40 dB SNR: at least 90 % of
    the frames voiced, under 5 % gross errors (> 2 semitones), median error under 0.2 st."""
    from models.augment import add_noise

    rng = np.random.default_rng(0)
    errors, frames, voiced = [], 0, 0
    for _ in range(20):
        t = np.arange(32000) / 16000
        lo = rng.uniform(85, 220)
        f0 = lo + lo * rng.uniform(0.1, 1.0) * (0.5 - 0.5 * np.cos(2 * np.pi * t / 2.0))
        formants = [(rng.uniform(300, 800), 80.0), (rng.uniform(900, 2200), 100.0), (2600, 120)]
        x = np.concatenate([np.zeros(8000), _vowel(f0, formants)]).astype(np.float32)
        x = add_noise(x, float(rng.choice([40.0, 20.0, 10.0])), rng, "pink")
        pcm = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int64)
        fr = FeatureExtractor()._frame_stats(pcm[: len(pcm) // 400 * 400])
        for k in range(20, len(pcm) // 400):
            frames += 1
            if fr["voiced"][k]:
                voiced += 1
                true = f0[k * 400 + 200 - 8000]
                errors.append(12 * np.log2(100 * 2 ** (fr["stc"][k] / 1200) / true))
    err = np.abs(np.array(errors))
    assert voiced / frames >= 0.9
    assert np.mean(err > 2.0) < 0.05
    assert np.median(err) < 0.2
