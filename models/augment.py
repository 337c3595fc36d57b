"""Robustness copies of a clip: recording level, background noise, room reverberation.

All pure numpy on float32 audio in [-1, 1) at 16 kHz, seeded through the `rng` passed in, so a
training run is reproducible. The same functions build the robustness test sets (level-shifted
and noisy copies of held-out speakers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class AugmentSettings:
    gains_db: tuple[float, ...] = (-20.0, -10.0, 0.0, 6.0, 10.0)
    snrs_db: tuple[float, ...] = (30.0, 20.0, 10.0)
    rt60s_s: tuple[float, ...] = (0.2, 0.4, 0.7)


def gain(audio: np.ndarray, db: float) -> np.ndarray:
    """Level change with clipping at full scale, as an over-driven microphone would."""
    return np.clip(audio * np.float32(10.0 ** (db / 20.0)), -1.0, 32767 / 32768).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise (closer to room/HVAC/crowd hum than white noise), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def babble_like_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Speech-shaped noise: pink noise amplitude-modulated at syllable rates, unit RMS."""
    x = pink_noise(n, rng)
    t = np.arange(n) / SAMPLE_RATE
    env = 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t + rng.uniform(0, 6.3))
    y = x * env
    return (y / (np.sqrt(np.mean(y**2)) + 1e-12)).astype(np.float32)


def add_noise(
    audio: np.ndarray, snr_db: float, rng: np.random.Generator, kind: str = "pink"
) -> np.ndarray:
    """Additive noise at `snr_db` relative to the active-speech power of `audio`."""
    n = audio.size
    noise = {"pink": pink_noise, "white": _white, "babble": babble_like_noise}[kind](n, rng)
    power = _active_power(audio)
    noise *= np.float32(np.sqrt(power / 10.0 ** (snr_db / 10.0)))
    return np.clip(audio + noise, -1.0, 32767 / 32768).astype(np.float32)


def _white(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def _active_power(audio: np.ndarray) -> float:
    """Mean power of the louder 50 % of 20 ms frames, so pauses do not inflate the SNR."""
    frame = SAMPLE_RATE // 50
    k = audio.size // frame
    if k == 0:
        return float(np.mean(audio**2) + 1e-12)
    p = np.mean(audio[: k * frame].reshape(k, frame).astype(np.float64) ** 2, axis=1)
    top = np.sort(p)[k // 2 :]
    return float(np.mean(top) + 1e-12)


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum (50 or 60 Hz and harmonics: a fridge, a light ballast) with a little hiss,
    unit RMS."""
    t = np.arange(n) / SAMPLE_RATE
    f0 = 50.0 if rng.random() < 0.5 else 60.0
    x = sum(
        a * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3))
        for h, a in ((1, 1.0), (2, 0.5), (3, 0.3), (5, 0.15))
    ) + 0.05 * rng.standard_normal(n)
    return (x / np.sqrt(np.mean(x**2))).astype(np.float32)


def floor_noise(kind: str, n: int, level_db: float, rng: np.random.Generator) -> np.ndarray:
    """A steady background of `kind` (white, pink, hum) at `level_db` dBFS RMS."""
    make = {"white": _white, "pink": pink_noise, "hum": hum}.get(kind)
    if make is None:
        raise ValueError(f"unknown noise floor {kind!r}; choose white, pink or hum")
    return (make(n, rng) * np.float32(10 ** (level_db / 20))).astype(np.float32)


def random_floor(n: int, rng: np.random.Generator, lo_db: float = -75.0, hi_db: float = -35.0):
    """A random room background for a training conversation: kind and level drawn at random."""
    kind = str(rng.choice(["white", "pink", "hum"]))
    return floor_noise(kind, n, float(rng.uniform(lo_db, hi_db)), rng)


def room_impulse(rt60_s: float, rng: np.random.Generator, direct: float = 1.0) -> np.ndarray:
    """Synthetic room: a direct path plus exponentially decaying noise (-60 dB after rt60_s)."""
    n = max(2, int(rt60_s * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s)  # ln(1000) = 6.9078
    tail[:40] = 0.0  # ~2.5 ms before the first reflections
    tail *= 0.3 / (np.sqrt(np.sum(tail**2)) + 1e-12)
    h = tail
    h[0] = direct
    return h.astype(np.float32)


def reverb(audio: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room and restore the original active level."""
    from scipy.signal import fftconvolve

    wet = fftconvolve(audio, room_impulse(rt60_s, rng))[: audio.size]
    wet *= np.sqrt(_active_power(audio) / _active_power(wet))
    return np.clip(wet, -1.0, 32767 / 32768).astype(np.float32)


def random_copy(
    audio: np.ndarray, rng: np.random.Generator, settings: AugmentSettings = AugmentSettings()
) -> tuple[np.ndarray, str]:
    """One randomly degraded copy for training and a short description of what was done."""
    out = audio
    parts = []
    if rng.random() < 0.5:
        rt = float(rng.choice(settings.rt60s_s))
        out = reverb(out, rt, rng)
        parts.append(f"rt60={rt}")
    if rng.random() < 0.7:
        snr = float(rng.choice(settings.snrs_db))
        kind = str(rng.choice(["pink", "white", "babble"]))
        out = add_noise(out, snr, rng, kind)
        parts.append(f"{kind}@{snr:g}dB")
    g = float(rng.uniform(min(settings.gains_db), max(settings.gains_db)))
    out = gain(out, g)
    parts.append(f"gain={g:+.1f}dB")
    return out, ",".join(parts)
