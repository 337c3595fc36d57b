"""Prosody feature front end, numpy reference (spec: docs/features.md).

Vectorised over frames and windows; used for training and on the Raspberry Pi. The MicroPython
extractor in firmware/core/features.py implements the same integer recurrences per frame, so both
produce the same numbers (tests/test_features_parity.py).

    fx = FeatureExtractor()
    for rec in fx.process(int16_chunk):     # any chunk size, same result
        rec.features                         # float32 vector, order = FEATURE_NAMES
    fx.new_conversation()                    # baseline restarts, noise floor kept
    fx.reset()                               # a new stream

    X, records = extract(samples, sr=16000)  # whole clip -> (n_windows, N_FEATURES)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

SAMPLE_RATE = 16000
FRAME = 400  # samples, 25 ms, frames do not overlap
WINDOW_FRAMES = 40  # 1.0 s
HOP_FRAMES = 10  # 0.25 s
DECIM = 4  # pitch path runs at 4 kHz
SUB = FRAME // DECIM  # decimated samples per frame
BOX = 8  # boxcar length of the decimating low-pass (nulls at multiples of 2 kHz)
LAG_MIN = 8  # 500 Hz at 4 kHz
LAG_MAX = 50  # 80 Hz
N_LAGS = LAG_MAX - LAG_MIN + 1

# Activity gate on the frame level A = sum |x - frame mean| (integers, see spec).
ABS_MIN = 1311  # about -80 dBFS: never speech below this
PEAK_FALL_SHIFT = 7  # speech peak tracker falls by 1/128 per frame (~2.7 dB/s)
PEAK_NUM = 18  # active only within 25 dB of the recent peak, so the gate follows the gain
# Noise floor of A: falls a quarter of the way to a quieter frame, rises 1/32 of the way to a
# louder one but never faster than 1/256 per frame (~1.4 dB/s), so it sits near the noise mean
# rather than at its minimum and does not climb into sustained speech.
FLOOR_FALL_SHIFT = 2
FLOOR_RISE_SHIFT = 5
FLOOR_CAP_SHIFT = 8
ACT_NUM, ACT_DEN = 16, 9  # loud when A * 9 > floor * 16 (5 dB over the floor)
VOICE_NUM, VOICE_DEN = 2, 5  # voiced when AMDF min < 0.4 * AMDF max
PICK_DEN = 4  # first local AMDF minimum in the lowest quarter of the AMDF's range
LEVEL_SPAN_CDB = 2000  # level spread/baseline use frames within 20 dB of the window's loudest
DIP_SCALE = 10000  # aperiodicity of a frame in units of 1e-4
ONSET_NUM, ONSET_DEN = 3, 2  # low-band level up 3.5 dB over two frames

# Per-conversation baseline: cumulative mean over the first windows, then a slow running mean.
BASE_WARM = 12
BASE_SLOW = 240
BASE_MIN_ACTIVE = 10  # level/tilt baseline: >= 10 active and >= 5 voiced frames (speech, not
# a noise burst)
BASE_MIN_VOICED = 5
VOICE_SPLIT_ST = 7.0  # a second voice starts this far (semitones) from the first voice's F0

DB = 8.685889638065037  # 20 / ln 10
ST = 17.312340490667562  # 12 / ln 2
LEVEL_REF = FRAME * 32768.0
SINE_CORR_DB = 0.9121785  # mean-abs -> rms for a sine, so a full-scale sine reads -3.01 dBFS

FEATURE_NAMES: tuple[str, ...] = (
    "speech",
    "voiced",
    "level_sd_db",
    "level_range_db",
    "level_rel_db",
    "f0_st",
    "f0_rel_st",
    "f0_range_st",
    "f0_sd_st",
    "f0_delta_st",
    "hf_db",
    "hf2_db",
    "lf_db",
    "hf_rel_db",
    "rate",
    "pause",
    "aperiodicity",
)
N_FEATURES = len(FEATURE_NAMES)

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class WindowRecord:
    """One 1 s window; `t` is the window end in seconds since the stream started."""

    t: float
    speech: float
    level_db: float
    f0_hz: float
    rate: float
    features: NDArray[np.float32] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "speech": self.speech,
            "level_db": self.level_db,
            "f0_hz": self.f0_hz,
            "rate": self.rate,
            "features": [float(v) for v in self.features],
        }


class _Baseline:
    """Running per-conversation mean: cumulative for BASE_WARM updates, then 1/BASE_SLOW."""

    __slots__ = ("n", "value")

    def __init__(self) -> None:
        self.n = 0
        self.value = 0.0

    def relative(self, x: float) -> float:
        return x - self.value if self.n else 0.0

    def update(self, x: float) -> None:
        if self.n < BASE_WARM:
            self.n += 1
            self.value += (x - self.value) / self.n
        else:
            self.value += (x - self.value) / BASE_SLOW


class _Voice:
    """Baselines of one voice in the conversation (level, F0, spectral balance)."""

    __slots__ = ("level", "f0", "hf")

    def __init__(self) -> None:
        self.level = _Baseline()
        self.f0 = _Baseline()
        self.hf = _Baseline()


def _as_int16(samples: Any) -> NDArray[np.int16]:
    if isinstance(samples, (bytes, bytearray, memoryview)):
        if len(memoryview(samples).cast("B")) % 2:
            raise ValueError(
                "PCM chunk must hold whole int16 samples (an even number of bytes); "
                "keep the odd byte for the next chunk"
            )
        return np.frombuffer(samples, dtype="<i2")
    a = np.asarray(samples)
    if a.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {a.shape}; mix down first")
    if a.dtype == np.int16:
        return a
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0)
        return np.clip(np.round(a * 32768.0), -32768, 32767).astype(np.int16)
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a, -32768, 32767).astype(np.int16)
    raise ValueError(f"expected int16 PCM or float samples in [-1, 1], got dtype {a.dtype}")


def _log(x: FloatArray) -> FloatArray:
    return np.log(x)


class FeatureExtractor:
    """Streaming extractor: `process(chunk)` -> window records, `reset()`, `new_conversation()`."""

    def __init__(self) -> None:
        self.reset()

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything: a new audio stream."""
        self._pending = np.zeros(0, dtype=np.int16)
        self._xtail = np.zeros(BOX, dtype=np.int64)  # last samples before the next frame
        self._ytail = np.zeros(LAG_MAX, dtype=np.int64)  # last decimated samples
        self._floor = -1  # noise floor of A; -1 = not yet set
        self._peak = 0  # recent speech peak of A
        self._run = False  # previous frame was active
        self._ltail = [0, 0]  # low-band level of the two previous frames
        self._ctail = False  # onset condition of the previous frame
        self._frames = 0
        self._hist: dict[str, np.ndarray] = {}
        self.new_conversation()

    def new_conversation(self) -> None:
        """Restart the per-conversation baseline; the noise floor and audio history stay."""
        self._voices = (_Voice(), _Voice())
        self._voice = 0

    # -- processing --------------------------------------------------------------------------
    def process(self, samples: Any) -> list[WindowRecord]:
        """Feed int16 PCM (array or little-endian bytes); returns the windows completed."""
        x = _as_int16(samples)
        buf = np.concatenate([self._pending, x]) if self._pending.size else x
        nf = buf.size // FRAME
        self._pending = buf[nf * FRAME :].copy()
        if nf == 0:
            return []
        frames = self._frame_stats(buf[: nf * FRAME].astype(np.int64))
        first = self._frames
        self._frames += nf
        self._append_history(frames)
        return self._windows(first, nf)

    def _frame_stats(self, x: IntArray) -> dict[str, np.ndarray]:
        nf = x.size // FRAME
        ext = np.concatenate([self._xtail, x])  # BOX samples of history in front
        self._xtail = ext[-BOX:].copy()
        X = x.reshape(nf, FRAME)
        s = X.sum(axis=1)
        m = s // FRAME
        A = np.abs(X - m[:, None]).sum(axis=1)
        d1 = ext[BOX:] - ext[BOX - 1 : -1]
        D1 = np.abs(d1).reshape(nf, FRAME).sum(axis=1)
        d2 = d1 - (ext[BOX - 1 : -1] - ext[BOX - 2 : -2])
        D2 = np.abs(d2).reshape(nf, FRAME).sum(axis=1)
        # y[j] = sum of x[4j-4 .. 4j+3]: boxcar-8 low-pass, every 4th sample.
        c = np.concatenate([[0], np.cumsum(ext)])
        j = np.arange(nf * SUB)
        y = c[DECIM * j + BOX + DECIM] - c[DECIM * j + DECIM]
        Y = y.reshape(nf, SUB)
        my = Y.sum(axis=1) // SUB
        L = np.abs(Y - my[:, None]).sum(axis=1)

        # Sequential integer gate (cheap scalar loop, identical to the device).
        loud = np.zeros(nf, dtype=bool)
        floor = self._floor
        peak = self._peak
        for k, a in enumerate(A.tolist()):
            if floor < 0:
                floor = a
            elif a < floor:
                floor -= (floor - a) >> FLOOR_FALL_SHIFT
            else:
                floor += min((a - floor) >> FLOOR_RISE_SHIFT, (floor >> FLOOR_CAP_SHIFT) + 1)
            if a > peak:
                peak = a
            else:
                peak -= peak >> PEAK_FALL_SHIFT
            loud[k] = a > ABS_MIN and a * ACT_DEN > floor * ACT_NUM and a * PEAK_NUM > peak
        self._floor = floor
        self._peak = peak

        # AMDF pitch on loud frames: a[lag] = sum_j |y[j] - y[j - lag]|.
        ypad = np.concatenate([self._ytail, y])
        self._ytail = ypad[-LAG_MAX:].copy()
        lag = np.zeros(nf, dtype=np.int64)
        num = np.zeros(nf, dtype=np.int64)
        den = np.zeros(nf, dtype=np.int64)
        amin = np.zeros(nf, dtype=np.int64)
        amax = np.zeros(nf, dtype=np.int64)
        voiced = np.zeros(nf, dtype=bool)
        idx = np.flatnonzero(loud)
        if idx.size:
            win = np.lib.stride_tricks.sliding_window_view(ypad, LAG_MAX + SUB)[idx * SUB]
            cur = win[:, LAG_MAX:]
            amdf = np.empty((idx.size, N_LAGS), dtype=np.int64)
            for i, lg in enumerate(range(LAG_MIN, LAG_MAX + 1)):
                amdf[:, i] = np.abs(cur - win[:, LAG_MAX - lg : LAG_MAX + SUB - lg]).sum(axis=1)
            gmin = amdf.min(axis=1)
            gmax = amdf.max(axis=1)
            inner = amdf[:, 1:-1]
            cand = (
                (inner <= amdf[:, :-2])
                & (inner <= amdf[:, 2:])
                & ((inner - gmin[:, None]) * PICK_DEN <= (gmax - gmin)[:, None])
            )
            has = cand.any(axis=1)
            pick = np.argmax(cand, axis=1) + 1  # index into amdf
            rows = np.arange(idx.size)
            a0 = amdf[rows, pick - 1]
            a1 = amdf[rows, pick]
            a2 = amdf[rows, pick + 1]
            v = has & (a1 * VOICE_DEN < gmax * VOICE_NUM)
            lag[idx] = pick + LAG_MIN
            num[idx] = a0 - a2
            den[idx] = 2 * (a0 - 2 * a1 + a2)
            amin[idx] = gmin
            amax[idx] = gmax
            voiced[idx] = v

        # Speech starts on a voiced frame and continues while frames stay loud: clicks, breaths
        # and noise bursts (unvoiced) never open it, whatever the gain.
        active = np.zeros(nf, dtype=bool)
        run = self._run
        for k, (lo, vo) in enumerate(zip(loud.tolist(), voiced.tolist(), strict=True)):
            run = lo and (run or vo)
            active[k] = run
        self._run = run
        voiced &= active

        # Syllable-like onsets: active and low band up 3.5 dB over two frames, rising edge.
        Lp = np.concatenate([np.asarray(self._ltail, dtype=np.int64), L])
        cond = active & (L * ONSET_DEN >= Lp[:-2] * ONSET_NUM)
        prev = np.concatenate([[self._ctail], cond[:-1]])
        onset = cond & ~prev
        self._ltail = [int(Lp[-2]), int(Lp[-1])]
        self._ctail = bool(cond[-1])

        # Per-frame values in fixed point (centi-dB, centi-semitones, 1e-4), so the device sums
        # and sorts them as small integers without boxing floats.
        lvc = np.rint(100.0 * (DB * _log(np.maximum(A, 1) / LEVEL_REF) + SINE_CORR_DB))
        frac = np.zeros(nf)
        ok = den > 0
        frac[ok] = num[ok] / den[ok]
        frac = np.clip(frac, -0.5, 0.5)
        stc = np.zeros(nf, dtype=np.int64)
        stc[voiced] = np.rint(100.0 * (ST * _log(40.0 / (lag[voiced] + frac[voiced]))))
        dipm = np.zeros(nf, dtype=np.int64)
        okm = amax > 0
        dipm[okm] = amin[okm] * DIP_SCALE // amax[okm]
        return {
            "active": active,
            "voiced": voiced,
            "onset": onset,
            "lvc": lvc.astype(np.int64),
            "A": A,
            "D1": D1,
            "D2": D2,
            "L": L,
            "stc": stc,
            "dipm": dipm,
        }

    def _append_history(self, frames: dict[str, np.ndarray]) -> None:
        keep = WINDOW_FRAMES - 1
        if not self._hist:
            self._hist = frames
        else:
            self._hist = {k: np.concatenate([self._hist[k][-keep:], v]) for k, v in frames.items()}

    def _windows(self, first: int, nf: int) -> list[WindowRecord]:
        """Windows ending in frames first..first+nf-1 (history holds up to 39 earlier frames)."""
        h = self._hist
        n_hist = h["active"].size
        base = first + nf - n_hist  # absolute index of h[...][0]
        ends = [
            e
            for e in range(first, first + nf)
            if e + 1 >= WINDOW_FRAMES and (e + 1 - WINDOW_FRAMES) % HOP_FRAMES == 0
        ]
        if not ends:
            self._trim()
            return []
        starts = np.asarray(ends) - base - WINDOW_FRAMES + 1
        rows = starts[:, None] + np.arange(WINDOW_FRAMES)[None, :]  # (nw, 40) into history
        act = h["active"][rows]
        voi = h["voiced"][rows]
        n_act = act.sum(axis=1)
        n_voi = voi.sum(axis=1)
        safe_act = np.maximum(n_act, 1)

        lvc = h["lvc"][rows]
        lv_act = np.where(act, lvc, 0)
        level_db = np.where(
            n_act > 0,
            lv_act.sum(axis=1) / (100.0 * safe_act),
            lvc.sum(axis=1) / (100.0 * WINDOW_FRAMES),
        )
        # Level spread only over frames within LEVEL_SPAN_DB of the window's loudest: the quiet
        # tails a gain change moves across the gate do not count. Sums are of centi-dB below
        # the loudest frame (exact integers).
        wmax = np.where(act, lvc, -(10**9)).max(axis=1)
        near = act & (lvc >= (wmax - LEVEL_SPAN_CDB)[:, None])
        n_near = near.sum(axis=1)
        safe_near = np.maximum(n_near, 1)
        dev = np.where(near, lvc - wmax[:, None], 0)
        s1 = dev.sum(axis=1)
        s2 = (dev * dev).sum(axis=1)
        nmean = wmax / 100.0 + s1 / (100.0 * safe_near)
        m1 = s1 / safe_near
        lvar = (s2 / safe_near - m1 * m1) / 10000.0
        level_sd = np.where(n_near >= 2, np.sqrt(np.maximum(lvar, 0.0)), 0.0)
        # Spectral balance from band sums over the active frames (energy-weighted, so quiet
        # frames near the quantisation floor barely count).
        sA = np.maximum(np.where(act, h["A"][rows], 0).sum(axis=1), 1)
        sD1 = np.maximum(np.where(act, h["D1"][rows], 0).sum(axis=1), 1)
        sD2 = np.maximum(np.where(act, h["D2"][rows], 0).sum(axis=1), 1)
        sL = np.maximum(np.where(act, h["L"][rows], 0).sum(axis=1), 1)
        hf = DB * _log(sD1 / sA)
        hf2 = DB * _log(sD2 / sD1)
        lf = DB * _log(sL / (2.0 * sA))
        dip = np.where(act, h["dipm"][rows], 0).sum(axis=1) / (DIP_SCALE * 1.0 * safe_act)

        stc = h["stc"][rows]
        big = 10**9
        srt = np.sort(np.where(voi, stc, big), axis=1)  # unvoiced sort last
        nv = n_voi
        r = np.arange(len(ends))
        lo_i = np.maximum((nv - 1) // 2, 0)
        hi_i = np.minimum(nv // 2, WINDOW_FRAMES - 1)
        f0_st = np.where(nv > 0, (srt[r, lo_i] + srt[r, hi_i]) / 200.0, 0.0)
        p_lo = srt[r, np.minimum(nv // 10, WINDOW_FRAMES - 1)]
        p_hi = srt[r, np.clip(nv - 1 - nv // 10, 0, WINDOW_FRAMES - 1)]
        f0_range = np.where(nv >= 2, (p_hi - p_lo) / 100.0, 0.0)
        st0 = np.where(voi, stc, 0)
        safe_v = np.maximum(nv, 1)
        q1 = st0.sum(axis=1)
        q2 = (st0 * st0).sum(axis=1)
        mq = q1 / safe_v
        svar = (q2 / safe_v - mq * mq) / 10000.0
        f0_sd = np.where(nv >= 2, np.sqrt(np.maximum(svar, 0.0)), 0.0)
        pair = voi[:, 1:] & voi[:, :-1]
        dst = np.where(pair, np.abs(stc[:, 1:] - stc[:, :-1]), 0).sum(axis=1)
        npair = pair.sum(axis=1)
        f0_delta = np.where(npair > 0, dst / (100.0 * np.maximum(npair, 1)), 0.0)

        rate = h["onset"][rows].sum(axis=1) * (SAMPLE_RATE / (FRAME * WINDOW_FRAMES))
        first_a = np.argmax(act, axis=1)
        last_a = WINDOW_FRAMES - 1 - np.argmax(act[:, ::-1], axis=1)
        pause = np.where(n_act > 0, (last_a - first_a + 1 - n_act) / WINDOW_FRAMES, 0.0)
        speech = n_act / WINDOW_FRAMES
        voiced = np.where(n_act > 0, n_voi / safe_act, 0.0)
        has_act = n_act > 0
        slv = np.sort(np.where(near, lvc, big), axis=1)  # others sort last
        l_lo = slv[r, np.minimum(n_near // 10, WINDOW_FRAMES - 1)]
        l_hi = slv[r, np.clip(n_near - 1 - n_near // 10, 0, WINDOW_FRAMES - 1)]
        level_range = np.where(n_near >= 2, (l_hi - l_lo) / 100.0, 0.0)
        hf = np.where(has_act, hf, 0.0)
        hf2 = np.where(has_act, hf2, 0.0)
        lf = np.where(has_act, lf, 0.0)
        dip = np.where(has_act, dip, 0.0)

        out: list[WindowRecord] = []
        for i, e in enumerate(ends):
            # Two voices (staff and customer) are told apart by pitch: a window goes to the voice
            # whose F0 baseline is nearer; the second voice starts with the first window more
            # than VOICE_SPLIT_ST away from the first. Unvoiced windows stay with the last voice.
            if nv[i] > 0:
                f = float(f0_st[i])
                v0, v1 = self._voices
                if v0.f0.n == 0:
                    self._voice = 0
                elif v1.f0.n == 0:
                    self._voice = 1 if abs(f - v0.f0.value) > VOICE_SPLIT_ST else 0
                else:
                    self._voice = 0 if abs(f - v0.f0.value) <= abs(f - v1.f0.value) else 1
            voice = self._voices[self._voice]
            # Relative features use the baseline from before this window, then update it.
            rel_level = voice.level.relative(float(nmean[i])) if has_act[i] else 0.0
            rel_hf = voice.hf.relative(float(hf[i])) if has_act[i] else 0.0
            rel_f0 = voice.f0.relative(float(f0_st[i])) if nv[i] > 0 else 0.0
            if n_act[i] >= BASE_MIN_ACTIVE and nv[i] >= BASE_MIN_VOICED:
                voice.level.update(float(nmean[i]))
                voice.hf.update(float(hf[i]))
            if nv[i] >= BASE_MIN_VOICED:
                voice.f0.update(float(f0_st[i]))
            vec = np.array(
                [
                    speech[i],
                    voiced[i],
                    level_sd[i],
                    level_range[i],
                    rel_level,
                    f0_st[i],
                    rel_f0,
                    f0_range[i],
                    f0_sd[i],
                    f0_delta[i],
                    hf[i],
                    hf2[i],
                    lf[i],
                    rel_hf,
                    rate[i],
                    pause[i],
                    dip[i],
                ],
                dtype=np.float32,
            )
            out.append(
                WindowRecord(
                    t=(e + 1) * FRAME / SAMPLE_RATE,
                    speech=float(speech[i]),
                    level_db=float(level_db[i]),
                    f0_hz=float(100.0 * np.exp(f0_st[i] / ST)) if nv[i] > 0 else 0.0,
                    rate=float(rate[i]),
                    features=vec,
                )
            )
        self._trim()
        return out

    def _trim(self) -> None:
        keep = WINDOW_FRAMES - 1
        if self._hist and self._hist["active"].size > keep:
            self._hist = {k: v[-keep:] for k, v in self._hist.items()}


def extract(samples: Any, sr: int = SAMPLE_RATE) -> tuple[NDArray[np.float32], list[WindowRecord]]:
    """Whole clip -> (features (n_windows, N_FEATURES) float32, window records).

    Float input is taken as [-1, 1]; other sample rates are resampled to 16 kHz. Clips shorter
    than one window give zero rows.
    """
    x = np.asarray(samples) if not isinstance(samples, (bytes, bytearray)) else samples
    if sr != SAMPLE_RATE:
        from scipy.signal import resample_poly

        xf = _as_int16(x).astype(np.float64)
        g = np.gcd(int(sr), SAMPLE_RATE)
        xf = resample_poly(xf, SAMPLE_RATE // g, int(sr) // g)
        x = np.clip(np.round(xf), -32768, 32767).astype(np.int16)
    records = FeatureExtractor().process(x)
    if not records:
        return np.zeros((0, N_FEATURES), dtype=np.float32), records
    return np.stack([r.features for r in records]), records
