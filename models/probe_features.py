"""Which features would tell stress from happy/surprised speech? A measurement (issue 13).

The shipped model hears arousal: its "stress vs happy/surprised" head separates the two on unseen
speakers with window AUC 0.73-0.75 only (models/MODEL_CARD.md). This probe measures, on the
project's speaker-grouped folds and the project's windows (models/dataset.py: each clip after a
neutral lead-in of the same speaker, 1 s windows every 0.25 s), how much candidate features a
microcontroller could afford would add to the 17 shipped ones, against openSMILE's eGeMAPS
functionals of the same windows as a ceiling. CPython only, nothing here ships:

    python -m models.probe_features            # 6 folds, logistic regression and the MLP
    python -m models.probe_features --quick    # 2 folds, logistic regression, no eGeMAPS

Candidate groups (per 25 ms frame of the device's frame grid, pooled over the window's active
frames, as hf_db is): `bands` 8 log band energies relative to the total (a 512-point FFT of the
frame), `shape` spectral centroid/rolloff/flatness/slope, `flux` frame-to-frame change of the band
shape, `cep` cepstral means and spreads of the 8 bands (DCT), `pert` jitter/shimmer-like cycle
perturbation and the autocorrelation at the pitch period, `contour` pitch and level slopes over
the window and at its end, `slopes` mean rise/fall rates of level and pitch, `rel` the spectral
ones relative to the same speaker's lead-in (as the device's per-conversation baseline does for
hf_rel_db). openSMILE is imported only for eGeMAPS. Figures and their reading: docs/model.md.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models import augment, dataset
from models import features as fe
from models.corpora import Clip

log = logging.getLogger("calmcue.model")

FFT = 512
BAND_EDGES_HZ = (80, 300, 600, 1000, 1500, 2200, 3200, 4800, 8000)
N_BANDS = len(BAND_EDGES_HZ) - 1
N_CEP = 4
END_FRAMES = 8  # pitch slope at the window's end: its last 8 voiced frames (200 ms of voice)
STRESS = ("angry", "fearful")
AROUSED = ("happy", "surprised")
CALM = ("neutral", "calm")
TRAIN_SPEECH_MIN = 0.4  # the windows the model trains on (train.TrainSettings.window_speech_min)
EVAL_SPEECH_MIN = 0.5  # the windows a clip score averages (train.TrainSettings.speech_min)
# Held-out test conditions (training is always clean plus one random training copy).
PROBE_CONDITIONS = ("clean", "white-45dBFS", "gain-20dB")
VERSION = "2"
# openSMILE takes about 50 ms a window here: eGeMAPS of every 2nd window (hop 0.5 s).
EGEMAPS_EVERY = 2

GROUPS: dict[str, tuple[str, ...]] = {
    "bands": tuple(f"band{k}_db" for k in range(N_BANDS)) + ("tilt_db_oct",),
    "shape": ("centroid_hz", "centroid_sd_hz", "rolloff_hz", "flatness_db"),
    "flux": ("flux_db", "flux_sd_db"),
    "cep": tuple(f"cep{k}_mean" for k in range(1, N_CEP + 1))
    + tuple(f"cep{k}_sd" for k in range(1, N_CEP + 1)),
    "pert": ("jitter", "shimmer", "periodicity"),
    "contour": ("f0_slope_st_s", "f0_end_slope_st_s", "f0_curve", "level_slope_db_s"),
    # eGeMAPS-like: mean rise and fall rates of the level and pitch contours, frame to frame
    "slopes": ("level_rise_db_s", "level_fall_db_s", "f0_rise_st_s", "f0_fall_st_s"),
    "rel": tuple(f"band{k}_rel_db" for k in range(N_BANDS))
    + ("tilt_rel", "centroid_rel_hz")
    + tuple(f"cep{k}_rel" for k in range(1, N_CEP + 1)),
}
EXTRA_NAMES: tuple[str, ...] = tuple(n for g in GROUPS.values() for n in g)
# Features that the `rel` group re-expresses relative to the speaker's lead-in.
REL_OF = (
    tuple(f"band{k}_db" for k in range(N_BANDS))
    + ("tilt_db_oct", "centroid_hz")
    + tuple(f"cep{k}_mean" for k in range(1, N_CEP + 1))
)


# ---- per-frame and per-window candidate features (pure numpy) --------------------------------------


def band_matrix(n_fft: int = FFT, rate: int = fe.SAMPLE_RATE) -> np.ndarray:
    """(N_BANDS, n_fft // 2 + 1) 0/1 matrix summing FFT power bins into the probe's bands."""
    f = np.arange(n_fft // 2 + 1) * rate / n_fft
    lo = np.asarray(BAND_EDGES_HZ[:-1])[:, None]
    hi = np.asarray(BAND_EDGES_HZ[1:])[:, None]
    return ((f[None, :] >= lo) & (f[None, :] < hi)).astype(np.float64)


def dct_matrix(n_in: int = N_BANDS, n_out: int = N_CEP) -> np.ndarray:
    """Rows 1..n_out of the orthonormal DCT-II (row 0, the level, is left out)."""
    k = np.arange(1, n_out + 1)[:, None]
    n = np.arange(n_in)[None, :]
    return np.sqrt(2.0 / n_in) * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))


def frame_extras(x: np.ndarray, lag: np.ndarray, voiced: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame candidate values of int16 audio `x` on the device's frame grid (FRAME samples,
    no overlap); `lag` the AMDF pitch lag at 4 kHz and `voiced` the voicing of each frame."""
    nf = x.size // fe.FRAME
    X = x[: nf * fe.FRAME].reshape(nf, fe.FRAME).astype(np.float64) / 32768.0
    X = X - X.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(X * np.hanning(fe.FRAME)[None, :], FFT, axis=1)
    P = spec.real**2 + spec.imag**2 + 1e-12
    freqs = np.arange(P.shape[1]) * fe.SAMPLE_RATE / FFT
    inband = (freqs >= BAND_EDGES_HZ[0]) & (freqs < BAND_EDGES_HZ[-1])
    Pb = P[:, inband]
    fb = freqs[inband]
    tot = Pb.sum(axis=1)
    bands = P @ band_matrix().T  # (nf, N_BANDS)
    cum = np.cumsum(Pb, axis=1)
    roll = fb[np.minimum(np.argmax(cum >= 0.85 * tot[:, None], axis=1), fb.size - 1)]
    flat = 10.0 * (np.mean(np.log10(Pb), axis=1) - np.log10(np.mean(Pb, axis=1)))
    bdb = 10.0 * np.log10(bands + 1e-12)
    cep = (bdb - bdb.mean(axis=1, keepdims=True)) @ dct_matrix().T
    shape = bdb - bdb.mean(axis=1, keepdims=True)
    flux = np.zeros(nf)
    flux[1:] = np.sqrt(np.mean((shape[1:] - shape[:-1]) ** 2, axis=1))

    jit = np.full(nf, np.nan)
    shim = np.full(nf, np.nan)
    per = np.full(nf, np.nan)
    for k in np.flatnonzero(voiced):
        period = int(round(fe.DECIM * float(lag[k])))
        seg = X[k]
        if fe.FRAME // period < 2:
            continue
        a, b = seg[:-period], seg[period:]
        per[k] = float(np.dot(a, b) / (np.sqrt(np.dot(a, a) * np.dot(b, b)) + 1e-12))
        # cycle peaks: the largest sample in the first period, then each next one searched
        # within +-25 % of a period from where the last one predicts it
        pos = [int(np.argmax(seg[:period]))]
        while True:
            lo = pos[-1] + (3 * period) // 4
            hi = min(pos[-1] + (5 * period) // 4 + 1, fe.FRAME)
            if lo >= hi or pos[-1] + period >= fe.FRAME:
                break
            pos.append(lo + int(np.argmax(seg[lo:hi])))
        amp = seg[pos]
        if len(pos) >= 2:
            shim[k] = float(np.mean(np.abs(np.diff(amp))) / (np.mean(np.abs(amp)) + 1e-9))
        if len(pos) >= 3:
            p = np.diff(pos).astype(np.float64)
            jit[k] = float(np.mean(np.abs(np.diff(p))) / np.mean(p))
    return {
        "power": tot,
        "bands": bands,
        "centroid": (Pb @ fb) / tot,
        "rolloff": roll,
        "flatness": flat,
        "cep": cep,
        "flux": flux,
        "jitter": jit,
        "shimmer": shim,
        "periodicity": per,
    }


def _slope(y: np.ndarray, t: np.ndarray) -> float:
    if y.size < 3:
        return 0.0
    tc = t - t.mean()
    d = float(np.dot(tc, tc))
    return float(np.dot(tc, y - y.mean()) / d) if d > 0 else 0.0


def rise_fall(values: np.ndarray, ok: np.ndarray) -> tuple[float, float]:
    """Mean rising and mean falling rate (units per second, both >= 0) of a frame contour over
    pairs of consecutive frames where `ok` holds for both; 0 where there are none."""
    pair = ok[1:] & ok[:-1]
    d = (values[1:] - values[:-1])[pair] * (fe.SAMPLE_RATE / fe.FRAME)
    up, down = d[d > 0], d[d < 0]
    return (float(up.mean()) if up.size else 0.0, float(-down.mean()) if down.size else 0.0)


def window_extras(fx: dict[str, np.ndarray], frames: dict[str, np.ndarray], end: int) -> np.ndarray:
    """Candidate features (EXTRA_NAMES order, `rel` still absolute: see relative_to_lead_in) of
    the window whose last frame is `end`, pooled over its active frames as hf_db is."""
    rows = np.arange(end - fe.WINDOW_FRAMES + 1, end + 1)
    act = frames["active"][rows]
    voi = frames["voiced"][rows]
    out = dict.fromkeys(EXTRA_NAMES, 0.0)
    if act.sum() >= 2:
        r = rows[act]
        bands = fx["bands"][r].sum(axis=0) + 1e-12
        bdb = 10.0 * np.log10(bands / bands.sum())
        for k in range(N_BANDS):
            out[f"band{k}_db"] = float(bdb[k])
        centres = np.log2(np.sqrt(np.asarray(BAND_EDGES_HZ[:-1]) * np.asarray(BAND_EDGES_HZ[1:])))
        out["tilt_db_oct"] = _slope(bdb, centres)
        w = fx["power"][r] / fx["power"][r].sum()
        c = fx["centroid"][r]
        out["centroid_hz"] = float(np.dot(w, c))
        out["centroid_sd_hz"] = float(np.std(c))
        out["rolloff_hz"] = float(np.dot(w, fx["rolloff"][r]))
        out["flatness_db"] = float(np.mean(fx["flatness"][r]))
        pair = act[1:] & act[:-1]
        if pair.any():
            fl = fx["flux"][rows[1:][pair]]
            out["flux_db"] = float(np.mean(fl))
            out["flux_sd_db"] = float(np.std(fl))
        cep = fx["cep"][r]
        for k in range(N_CEP):
            out[f"cep{k + 1}_mean"] = float(np.mean(cep[:, k]))
            out[f"cep{k + 1}_sd"] = float(np.std(cep[:, k]))
        lv = frames["lvc"][r] / 100.0
        out["level_slope_db_s"] = _slope(lv, r * fe.FRAME / fe.SAMPLE_RATE)
        out["level_rise_db_s"], out["level_fall_db_s"] = rise_fall(frames["lvc"][rows] / 100.0, act)
    if voi.sum() >= 3:
        v = rows[voi]
        for name in ("jitter", "shimmer", "periodicity"):
            vals = fx[name][v]
            vals = vals[np.isfinite(vals)]
            out[name] = float(np.mean(vals)) if vals.size else 0.0
        st = frames["stc"][v] / 100.0
        tv = v * fe.FRAME / fe.SAMPLE_RATE
        out["f0_slope_st_s"] = _slope(st, tv)
        out["f0_rise_st_s"], out["f0_fall_st_s"] = rise_fall(frames["stc"][rows] / 100.0, voi)
        out["f0_end_slope_st_s"] = _slope(st[-END_FRAMES:], tv[-END_FRAMES:])
        if st.size >= 5:
            out["f0_curve"] = float(np.polyfit(tv - tv.mean(), st, 2)[0])
    for name in REL_OF:  # made relative later; absolute copy here
        out[REL_NAME[name]] = out[name]
    return np.array([out[n] for n in EXTRA_NAMES], dtype=np.float32)


REL_NAME = dict(zip(REL_OF, GROUPS["rel"], strict=True))


def relative_to_lead_in(extras: np.ndarray, lead: np.ndarray) -> np.ndarray:
    """The `rel` columns of a clip's target windows minus their mean over the lead-in's speech
    windows (`lead`: those windows' extras); unchanged when the lead-in has none."""
    out = extras.copy()
    if lead.shape[0] == 0:
        return out
    cols = [EXTRA_NAMES.index(REL_NAME[n]) for n in REL_OF]
    out[:, cols] -= lead[:, cols].mean(axis=0)
    return out


class _Tap(fe.FeatureExtractor):
    """The shipped extractor, keeping its per-frame values (active, voiced, lag, level)."""

    frames: dict[str, np.ndarray]

    def _frame_stats(self, x):  # type: ignore[no-untyped-def]
        out = super()._frame_stats(x)
        nf = x.size // fe.FRAME
        # the pitch lag is not returned; recover it from the centi-semitone value
        lag = np.zeros(nf)
        v = out["voiced"]
        lag[v] = 40.0 / np.exp(out["stc"][v] / 100.0 / fe.ST)
        out["lag"] = lag
        self.frames = out
        return out


def conversation_windows(
    pcm: np.ndarray, lead: np.ndarray | None, gap_s: float, floor: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """dataset.extract's windows plus the candidate features and each window's sample span.

    Returns t, speech, shipped features (n, 17), candidates (n, len(EXTRA_NAMES)) of the windows
    dataset.extract keeps, and the (start, end) sample span of each in the whole conversation.
    """
    if lead is None:
        audio, offset = pcm, 0.0
    else:
        gap = np.zeros(int(gap_s * dataset.RATE), np.int16)
        audio = np.concatenate([lead, gap, pcm])
        offset = (lead.size + gap.size) / dataset.RATE
    if floor is not None:
        audio = dataset.to_pcm(audio.astype(np.float32) / 32768.0 + floor[: audio.size])
    tap = _Tap()
    records = tap.process(audio)
    if not records:
        z = np.zeros(0)
        return z, z, np.zeros((0, fe.N_FEATURES)), np.zeros((0, len(EXTRA_NAMES))), []
    frames = tap.frames
    fx = frame_extras(audio, frames["lag"], frames["voiced"])
    ends = [int(round(r.t * fe.SAMPLE_RATE / fe.FRAME)) - 1 for r in records]
    ext = np.stack([window_extras(fx, frames, e) for e in ends])
    t = np.array([r.t for r in records]) - offset
    speech = np.array([r.speech for r in records])
    keep = t >= (0.25 - 1e-6 if lead is not None else 1.0 - 1e-6)
    lead_rows = (~keep) & (t <= 0.0) & (speech >= EVAL_SPEECH_MIN)
    ext_t = relative_to_lead_in(ext[keep], ext[lead_rows])
    spans = [((e + 1 - fe.WINDOW_FRAMES) * fe.FRAME, (e + 1) * fe.FRAME) for e in ends]
    spans = [s for s, k in zip(spans, keep, strict=True) if k]
    feats = np.stack([r.features for r in records])[keep]
    return t[keep], speech[keep], feats, ext_t, [(int(a), int(b)) for a, b in spans]


# ---- tables --------------------------------------------------------------------------------------


def _condition(name: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if name == "white-45dBFS":
        return x  # the floor goes under the whole conversation, see build
    return dataset.CONDITIONS[name](x, rng)


def _key(clips: Sequence[Clip], *parts: str) -> str:
    text = "|".join([dataset.feature_version(), *parts] + [str(c.path) for c in clips])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(
    clips: Sequence[Clip], condition: str, egemaps: bool, cache: Path | None = dataset.CACHE
) -> dict[str, np.ndarray]:
    """Window tables of `clips` under `condition` (one of PROBE_CONDITIONS or "train_copy"),
    cached under var/ (features only): the candidates by VERSION, eGeMAPS ("eg", when asked
    for or already cached) apart, so a new candidate does not pay for openSMILE again."""
    key = _key(clips, VERSION, condition)
    path = cache / f"probe-{condition}-{key}.npz" if cache else None
    eg_key = _key(clips, "egemaps", str(EGEMAPS_EVERY), condition)
    eg_path = cache / f"probe-egemaps-{condition}-{eg_key}.npz" if cache else None
    have = path is not None and path.exists()
    have_eg = eg_path is not None and eg_path.exists()
    if have and (have_eg or not egemaps):
        out = dict(np.load(path))  # type: ignore[arg-type]
        if have_eg:
            out["eg"] = np.load(eg_path)["eg"]  # type: ignore[arg-type]
        return out
    smile = None
    if egemaps and not have_eg:
        import opensmile  # reference only: never a runtime dependency

        smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.Functionals,
        )
    leads = dataset.lead_ins(clips)
    cond_id = (list(PROBE_CONDITIONS) + ["train_copy"]).index(condition)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("clip", "t", "speech", "x17", "xc", "eg")}
    t0 = time.monotonic()
    for i, c in enumerate(clips):
        rng = np.random.default_rng([7, cond_id, i])
        j = leads[i]
        gap = dataset.GAP_S
        floor = None
        if condition == "train_copy":
            x, _ = augment.random_copy(dataset.load_float(c.path), rng)
            lead = (
                augment.random_copy(dataset.load_float(clips[j].path), rng)[0]
                if j is not None
                else None
            )
            gap = float(rng.uniform(*dataset.PAUSE_S))
        else:
            x = _condition(condition, dataset.load_float(c.path), rng)
            lead = (
                _condition(condition, dataset.load_float(clips[j].path), rng)
                if j is not None
                else None
            )
        n = x.size + (0 if lead is None else lead.size + int(gap * dataset.RATE))
        if condition == "white-45dBFS":
            floor = augment.floor_noise("white", n, -45.0, rng)
        elif condition == "train_copy" and rng.random() < 0.8:
            floor = augment.random_floor(n, rng)
        pcm = dataset.to_pcm(x)
        lead_pcm = None if lead is None else dataset.to_pcm(lead)
        t, sp, x17, xc, spans = conversation_windows(pcm, lead_pcm, gap, floor)
        cols["clip"].append(np.full(t.size, i))
        cols["t"].append(t)
        cols["speech"].append(sp)
        cols["x17"].append(x17)
        cols["xc"].append(xc)
        if smile is not None:
            whole = (
                np.concatenate(
                    [lead_pcm, np.zeros(int(gap * dataset.RATE), np.int16), pcm]
                    if lead_pcm is not None
                    else [pcm]
                ).astype(np.float32)
                / 32768.0
            )
            if floor is not None:
                whole = whole + floor[: whole.size]
            rows = [
                smile.process_signal(whole[a:b], dataset.RATE).to_numpy()[0]
                if s >= TRAIN_SPEECH_MIN and k % EGEMAPS_EVERY == 0
                else np.zeros(88)
                for k, ((a, b), s) in enumerate(zip(spans, sp, strict=True))
            ]
            cols["eg"].append(np.array(rows).reshape(-1, 88))
        if i % 100 == 99 or i + 1 == len(clips):
            log.info(
                "  %s: %d/%d clips (%.0f s)", condition, i + 1, len(clips), time.monotonic() - t0
            )
    out = {k: np.concatenate(v) for k, v in cols.items() if v}
    out["clip"] = out["clip"].astype(np.int64)
    out["xc"] = np.nan_to_num(out["xc"])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{k: v for k, v in out.items() if k != "eg"})  # type: ignore[arg-type]
    if "eg" in out:
        out["eg"] = np.nan_to_num(out["eg"])
        if eg_path is not None:
            np.savez(eg_path, eg=out["eg"])
    elif have_eg:
        out["eg"] = np.load(eg_path)["eg"]  # type: ignore[arg-type]
    return out


# Column groups of openSMILE's 88 eGeMAPSv02 functionals (their order in opensmile 2.x), for
# "17+eg:<group>" (the shipped features plus one group) and "egemaps-<group>" (all but one).
EGEMAPS_GROUPS: dict[str, tuple[int, ...]] = {
    "f0_level": (0, 2, 3, 4),  # F0 mean and percentiles (semitones above 27.5 Hz): absolute
    "f0_shape": (1, 5, 6, 7, 8, 9),  # F0 spread, range, mean/sd of rising and falling slopes
    "loud_level": (10, 12, 13, 14, 87),  # loudness mean/percentiles, equivalent level: absolute
    "loud_shape": (11, 15, 16, 17, 18, 19, 81),  # loudness spread, range, slopes, peaks/s
    "flux": (20, 21, 66, 67, 80),  # spectral flux (all, voiced, unvoiced)
    "mfcc": (*range(22, 30), *range(68, 76)),  # MFCC 1-4 (all frames, voiced frames)
    "tilt": (*range(58, 66), *range(76, 80)),  # alpha ratio, Hammarberg, slopes 0-500/500-1500
    "formants": tuple(range(40, 58)),  # F1-F3 frequency, bandwidth, relative amplitude
    "voice": tuple(range(30, 40)),  # jitter, shimmer, HNR, H1-H2, H1-A3
    "timing": tuple(range(82, 87)),  # voiced/unvoiced segment rates and lengths
}


# ---- evaluation ----------------------------------------------------------------------------------


def select(table: dict[str, np.ndarray], feature_set: str) -> np.ndarray:
    """The window matrix of a feature set: "17" (or "17f0": the same columns, absolute pitch
    not ignored), "17+bands+cep", "17+all", "17+all-rel" (every candidate group but one), "egemaps",
    "17+egemaps" (parts joined by "+", "all" = every candidate group; a trailing "@eg" is
    ignored here: see on_egemaps_windows)."""
    parts = []
    for p in feature_set.removesuffix("@eg").split("+"):
        if p in ("17", "17f0"):
            parts.append(table["x17"])
        elif p == "egemaps":
            parts.append(table["eg"])
        elif p.startswith("eg:") and p[3:] in EGEMAPS_GROUPS:
            parts.append(table["eg"][:, list(EGEMAPS_GROUPS[p[3:]])])
        elif p.startswith("egemaps-") and all(g in EGEMAPS_GROUPS for g in p[8:].split("-")):
            drop = {i for g in p[8:].split("-") for i in EGEMAPS_GROUPS[g]}
            parts.append(table["eg"][:, [i for i in range(88) if i not in drop]])
        elif p == "all":
            parts.append(table["xc"])
        elif p.startswith("all-") and p[4:] in GROUPS:
            gone = set(GROUPS[p[4:]])
            parts.append(table["xc"][:, [i for i, n in enumerate(EXTRA_NAMES) if n not in gone]])
        elif p in GROUPS:
            parts.append(table["xc"][:, [EXTRA_NAMES.index(n) for n in GROUPS[p]]])
        else:
            raise ValueError(f"unknown feature group {p!r}; use 17, egemaps, all or {list(GROUPS)}")
    return np.concatenate(parts, axis=1).astype(np.float64)


def on_egemaps_windows(feature_set: str) -> bool:
    """eGeMAPS sets, and sets marked "@eg", train on clean windows only and are scored on the
    windows that have eGeMAPS values (every EGEMAPS_EVERY-th), so they compare like for like."""
    return feature_set.endswith("@eg") or "egemaps" in feature_set or "eg:" in feature_set


def _fit(x: np.ndarray, y: np.ndarray, model: str, ignore: Sequence[int], seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd < 1e-6] = 1.0
    scale = 1.0 / sd
    scale[list(ignore)] = 0.0  # absolute pitch, as the shipped model (train.TrainSettings.ignore)
    z = (x - mean) * scale
    w = np.where(y == 1, 0.5 / np.mean(y == 1), 0.5 / np.mean(y == 0))
    if model == "lr":
        m = LogisticRegression(C=1.0, max_iter=200, solver="newton-cholesky").fit(
            z, y, sample_weight=w
        )
    else:
        import warnings

        m = MLPClassifier(
            hidden_layer_sizes=(16, 8),
            activation="tanh",
            alpha=1e-3,
            max_iter=200,
            batch_size=256,
            random_state=seed,
            tol=1e-5,
            n_iter_no_change=20,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(z, y, sample_weight=w)
    return lambda q: m.predict_proba((q - mean) * scale)[:, 1]


def fold_aucs(
    train_tables: Sequence[dict[str, np.ndarray]],
    test_tables: dict[str, dict[str, np.ndarray]],
    clips: Sequence[Clip],
    folds: Sequence[np.ndarray],
    feature_set: str,
    negatives: Sequence[str],
    model: str,
) -> dict[str, tuple[np.ndarray, float]]:
    """Per test condition: window AUC of each held-out fold and the pooled clip AUC (mean score
    of a clip's speech windows, as train.clip_score) of stress against `negatives`."""
    from sklearn.metrics import roc_auc_score

    labels = np.array([c.label for c in clips])
    y_clip = np.where(np.isin(labels, STRESS), 1, np.where(np.isin(labels, negatives), 0, -1))
    # "17" as the shipped model uses it (absolute pitch f0_st ignored), "17f0" with f0_st
    base = feature_set.removesuffix("@eg").split("+")[0]
    ignore = [fe.FEATURE_NAMES.index("f0_st")] if base == "17" else []
    xs = [select(t, feature_set) for t in train_tables]
    out: dict[str, tuple[np.ndarray, float]] = {}
    aucs: dict[str, list[float]] = {c: [] for c in test_tables}
    clip_s = {c: np.full(len(clips), np.nan) for c in test_tables}
    for f, held in enumerate(folds):
        xtr, ytr = [], []
        for t, x in zip(train_tables, xs, strict=True):
            yw = y_clip[t["clip"]]
            keep = (yw >= 0) & ~np.isin(t["clip"], held) & (t["speech"] >= TRAIN_SPEECH_MIN)
            if on_egemaps_windows(feature_set):
                keep &= np.abs(t["eg"]).sum(axis=1) > 0
            xtr.append(x[keep])
            ytr.append(yw[keep])
        score = _fit(np.concatenate(xtr), np.concatenate(ytr), model, ignore, seed=f)
        for cond, t in test_tables.items():
            yw = y_clip[t["clip"]]
            keep = (yw >= 0) & np.isin(t["clip"], held) & (t["speech"] >= EVAL_SPEECH_MIN)
            if on_egemaps_windows(feature_set):
                keep &= np.abs(t["eg"]).sum(axis=1) > 0
            s = score(select(t, feature_set)[keep])
            # a fold without both classes (all its calm windows lost under noise) has no AUC
            both = 0 < yw[keep].sum() < keep.sum()
            aucs[cond].append(roc_auc_score(yw[keep], s) if both else np.nan)
            ids = t["clip"][keep]
            for i in np.unique(ids):
                clip_s[cond][i] = float(np.mean(s[ids == i]))
    for cond in test_tables:
        ok = np.isfinite(clip_s[cond]) & (y_clip >= 0)
        out[cond] = (np.array(aucs[cond]), float(roc_auc_score(y_clip[ok], clip_s[cond][ok])))
    return out


FEATURE_SETS = (
    "17",
    "17+slopes",
    "17+bands",
    "17+shape",
    "17+flux",
    "17+cep",
    "17+pert",
    "17+contour",
    "17+rel",
    "17+bands+cep+rel",
    "17+cep+flux+slopes",
    "17+all",
    *(f"17+all-{g}" for g in GROUPS),
)
# The MLP (the shipped model's 16-8 tanh, about 30 s a fit on this machine) runs on these only.
MLP_SETS = ("17", "17+bands+cep+rel", "17+cep+flux+slopes", "17+all")
QUICK_SETS = ("17", "17+bands", "17+cep", "17+pert", "17+contour", "17+rel", "17+all")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.probe_features", description=__doc__)
    ap.add_argument("--folds", type=int, default=6, help="speaker-grouped folds (default 6)")
    ap.add_argument(
        "--use-folds", type=int, default=0, help="evaluate only the first N folds (0: all)"
    )
    ap.add_argument("--quick", action="store_true", help="2 folds, LR only, no eGeMAPS")
    ap.add_argument("--no-egemaps", action="store_true", help="skip the openSMILE ceiling")
    ap.add_argument("--models", default="lr,mlp", help="lr and/or mlp (default both)")
    ap.add_argument(
        "--sets", default="", help="comma-separated feature sets (default: the table's)"
    )
    ap.add_argument(
        "--tasks", default="happy,calm", help="negatives: happy (happy/surprised), calm or both"
    )
    ap.add_argument("--conditions", default=",".join(PROBE_CONDITIONS))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from models.pipeline import load_clips

    clips = [c for c in load_clips() if c.label in STRESS + AROUSED + CALM]
    folds = dataset.speaker_folds(clips, a.folds)
    use = a.use_folds or (2 if a.quick else len(folds))
    folds = folds[:use]
    egemaps = not (a.quick or a.no_egemaps)
    models = ["lr"] if a.quick else a.models.split(",")
    conditions = a.conditions.split(",")
    sets = a.sets.split(",") if a.sets else list(QUICK_SETS if a.quick else FEATURE_SETS)
    log.info("%d clips, %d folds used; building window tables (cached under var/)", len(clips), use)
    tests = {c: build(clips, c, egemaps and c == "clean") for c in conditions}
    clean = tests["clean"] if "clean" in tests else build(clips, "clean", egemaps)
    copy = build(clips, "train_copy", False)
    if egemaps and not a.sets:
        sets += ["17@eg", "17f0@eg", "17+all@eg", "egemaps", "17+egemaps"]
        sets += [f"17+eg:{g}" for g in EGEMAPS_GROUPS]
        sets += [f"egemaps-{g}" for g in EGEMAPS_GROUPS]
        sets += ["egemaps-f0_level-f0_shape", "egemaps-f0_level-loud_level"]
    print(
        f"window AUC over {use} held-out folds (mean ± sd of the folds) and pooled clip AUC; "
        "trained on clean + 1 random copy (sets with eGeMAPS or @eg: clean only)"
    )
    tasks = {"happy": ("happy/surprised", AROUSED), "calm": ("neutral/calm", CALM)}
    for neg_name, neg in [tasks[k] for k in a.tasks.split(",")]:
        for model in models:
            print(f"\nstress vs {neg_name}, {model}")
            head = " | ".join(f"{c} window | {c} clip" for c in conditions)
            print(f"| features | {head} |")
            print("|---" * (1 + 2 * len(conditions)) + "|")
            for fs in sets if model == "lr" or a.sets else [x for x in sets if x in MLP_SETS]:
                eg = on_egemaps_windows(fs)
                got = fold_aucs(
                    [clean] if eg else [clean, copy],
                    {c: tests[c] for c in conditions if not eg or c == "clean"},
                    clips,
                    folds,
                    fs,
                    neg,
                    model,
                )
                cells = []
                for c in conditions:
                    if c in got:
                        w, cl = got[c]
                        k = int(np.isfinite(w).sum())
                        n = "" if k == w.size else f" ({k} folds)"
                        cells.append(f"{np.nanmean(w):.3f} ± {np.nanstd(w):.3f}{n} | {cl:.3f}")
                    else:
                        cells.append("– | –")
                print(f"| {fs} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
