# Prosody feature front end for the device (MicroPython). Spec: docs/features.md.
#
# Same numbers as the numpy reference models/features.py (parity-tested on every RAVDESS clip):
# each 25 ms frame is reduced to integers by viper loops over preallocated buffers (no heap
# allocation per frame); floats appear only when a 1 s window is completed (every 0.25 s).
#
#     fx = Features()
#     for rec in fx.process(pcm):   # int16 little-endian bytes/bytearray or array('h'), any size
#         rec["features"]           # array('f'), order = FEATURE_NAMES
#     fx.new_conversation()         # baseline restarts (noise floor kept)
#     fx.reset()                    # a new stream
#
# process() returns () when no window completed (no allocation), else a new list of records.
import math
from array import array

import micropython
from micropython import const

_SR = const(16000)
_FRAME = const(400)  # 25 ms, no overlap
_WIN = const(40)  # frames per 1 s window
_HOP = const(10)  # frames per 0.25 s hop
_XH = const(8)  # samples of history kept in front of a frame (decimator reaches back 4)
_SUB = const(100)  # decimated (4 kHz) samples per frame
_LAG_MIN = const(8)  # 500 Hz
_LAG_MAX = const(50)  # 80 Hz
_NLAGS = const(43)
_YOFF = const(0x80000)  # decimated samples are stored offset so they stay positive in ptr32
_ABS_MIN = const(1311)  # about -80 dBFS
_FLOOR_FALL = const(2)
_FLOOR_RISE = const(5)
_FLOOR_CAP = const(8)
_PEAK_FALL = const(7)
_F_ACTIVE = const(1)
_F_VOICED = const(2)
_F_ONSET = const(4)
_BASE_WARM = const(12)
_BASE_SLOW = const(240)
_BASE_MIN_ACTIVE = const(10)
_BASE_MIN_VOICED = const(5)
_SPLIT_ST = 7.0

_DB = 8.685889638065037  # 20 / ln 10
_ST = 17.312340490667562  # 12 / ln 2
_LEVEL_REF = 400 * 32768.0
_SINE_CORR_DB = 0.9121785
_BIG = const(1000000000)  # sorts after every value
_SPAN_CDB = const(2000)  # 20 dB in centi-dB
_DIP_SCALE = const(10000)

FEATURE_NAMES = (
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
N_FEATURES = const(17)


@micropython.viper
def _copy_in(dst: ptr16, doff: int, src: ptr16, soff: int, n: int):  # noqa: F821
    i = 0
    while i < n:
        dst[doff + i] = src[soff + i]
        i += 1


@micropython.viper
def _frame_sum(x: ptr16) -> int:  # noqa: F821
    s = 0
    i = _XH
    while i < _XH + _FRAME:
        s += (int(x[i]) ^ 0x8000) - 0x8000
        i += 1
    return s


@micropython.viper
def _frame_stats(x: ptr16, m: int, y: ptr32, o: ptr32):  # noqa: F821
    # Level A = sum|x - m|, first/second difference sums D1, D2 (high-frequency emphasis).
    a = 0
    d1 = 0
    d2 = 0
    p2 = (int(x[_XH - 2]) ^ 0x8000) - 0x8000
    p1 = (int(x[_XH - 1]) ^ 0x8000) - 0x8000
    i = _XH
    while i < _XH + _FRAME:
        v = (int(x[i]) ^ 0x8000) - 0x8000
        t = v - m
        a += t if t >= 0 else -t
        t = v - p1
        d1 += t if t >= 0 else -t
        t = t - (p1 - p2)
        d2 += t if t >= 0 else -t
        p2 = p1
        p1 = v
        i += 1
    # 4 kHz pitch path: y[j] = sum of 8 samples x[4j-4 .. 4j+3] (boxcar low-pass, nulls at 2 kHz).
    sy = 0
    j = 0
    while j < _SUB:
        k = 4 * j + 4
        s = 0
        e = k + 8
        while k < e:
            s += (int(x[k]) ^ 0x8000) - 0x8000
            k += 1
        y[_LAG_MAX + j] = s + _YOFF
        sy += s
        j += 1
    o[0] = a
    o[1] = d1
    o[2] = d2
    o[3] = sy


@micropython.viper
def _low_level(y: ptr32, my: int) -> int:  # noqa: F821
    # ptr32 loads are unsigned on 64-bit hosts; _YOFF keeps every stored value positive.
    s = 0
    j = _LAG_MAX
    while j < _LAG_MAX + _SUB:
        t = y[j] - _YOFF - my
        s += t if t >= 0 else -t
        j += 1
    return s


@micropython.viper
def _amdf(y: ptr32, a: ptr32, o: ptr32):  # noqa: F821
    # a[l - LAG_MIN] = sum_j |y[j] - y[j - l]| over this frame's 100 decimated samples.
    gmin = 0x3FFFFFFF
    gmax = 0
    i = 0
    while i < _NLAGS:
        lag = i + _LAG_MIN
        s = 0
        j = _LAG_MAX
        while j < _LAG_MAX + _SUB:
            t = y[j] - y[j - lag]
            s += t if t >= 0 else -t
            j += 1
        a[i] = s
        if s < gmin:
            gmin = s
        if s > gmax:
            gmax = s
        i += 1
    # First interior local minimum in the lowest quarter of the range (avoids octave-down picks).
    pick = 0
    rng = gmax - gmin
    i = 1
    while i < _NLAGS - 1:
        v = a[i]
        if v <= a[i - 1] and v <= a[i + 1] and (v - gmin) * 4 <= rng:
            pick = i
            break
        i += 1
    o[4] = pick
    o[5] = gmin
    o[6] = gmax


@micropython.viper
def _shift(y: ptr32, x: ptr16):  # noqa: F821
    # Keep the last 50 decimated samples and the last 8 input samples as history.
    j = 0
    while j < _LAG_MAX:
        y[j] = y[j + _SUB]
        j += 1
    j = 0
    while j < _XH:
        x[j] = x[j + _FRAME]
        j += 1


def _sorted_head(lst, k):
    # Sort the first k entries of lst in place; the rest hold _BIG so they stay at the end.
    i = k
    while i < _WIN:
        lst[i] = _BIG
        i += 1
    lst.sort()


class _Baseline:
    # Cumulative mean over the first _BASE_WARM updates, then a slow running mean.
    def __init__(self):
        self.n = 0
        self.value = 0.0

    def relative(self, x):
        return x - self.value if self.n else 0.0

    def update(self, x):
        if self.n < _BASE_WARM:
            self.n += 1
            self.value += (x - self.value) / self.n
        else:
            self.value += (x - self.value) / _BASE_SLOW


class Features:
    def __init__(self):
        self._x = array("h", bytes(2 * (_XH + _FRAME)))
        self._y = array("i", bytes(4 * (_LAG_MAX + _SUB)))
        self._a = array("i", bytes(4 * _NLAGS))
        self._o = array("i", bytes(4 * 8))
        # Per-frame ring (last 40 frames): integers from the frame, floats filled per window.
        self._rA = array("i", bytes(4 * _WIN))
        self._rD1 = array("i", bytes(4 * _WIN))
        self._rD2 = array("i", bytes(4 * _WIN))
        self._rL = array("i", bytes(4 * _WIN))
        self._rlag = array("i", bytes(4 * _WIN))
        self._rnum = array("i", bytes(4 * _WIN))
        self._rden = array("i", bytes(4 * _WIN))
        self._rmin = array("i", bytes(4 * _WIN))
        self._rmax = array("i", bytes(4 * _WIN))
        self._rflag = bytearray(_WIN)
        self._lvc = array("i", bytes(4 * _WIN))
        self._stc = array("i", bytes(4 * _WIN))
        self._dipm = array("i", bytes(4 * _WIN))
        self._sort = [0] * _WIN  # list.sort on small ints allocates nothing
        self._out = None
        self.reset()

    def reset(self):
        """Forget everything: a new audio stream."""
        for buf in (self._x, self._rflag):
            for i in range(len(buf)):
                buf[i] = 0
        for i in range(len(self._y)):
            self._y[i] = _YOFF
        self._fill = 0
        self._pos = 0  # ring slot of the next frame
        self._frames = 0
        self._floor = -1
        self._peak = 0
        self._run = False
        self._l1 = 0  # low-band level one and two frames back (onsets)
        self._l2 = 0
        self._cprev = False
        self._out = None
        self.new_conversation()

    def new_conversation(self):
        """Restart the per-conversation baseline; noise floor and audio history stay."""
        # (level, F0, spectral balance) baselines of up to two voices
        self._voices = (
            (_Baseline(), _Baseline(), _Baseline()),
            (_Baseline(), _Baseline(), _Baseline()),
        )
        self._voice = 0

    def process(self, pcm):
        """Feed int16 PCM; returns the list of window records completed by this chunk."""
        self._out = None
        if isinstance(pcm, array):
            n = len(pcm)
        else:
            n = len(pcm)
            if n & 1:
                raise ValueError("PCM chunk must hold whole int16 samples (even byte count)")
            n >>= 1
        x = self._x
        pos = 0
        while pos < n:
            take = _FRAME - self._fill
            if take > n - pos:
                take = n - pos
            _copy_in(x, _XH + self._fill, pcm, pos, take)
            self._fill += take
            pos += take
            if self._fill == _FRAME:
                self._fill = 0
                self._frame()
        return self._out if self._out is not None else ()

    def _frame(self):
        x = self._x
        y = self._y
        o = self._o
        _frame_stats(x, _frame_sum(x) // _FRAME, y, o)
        A = o[0]
        L = _low_level(y, o[3] // _SUB)
        floor = self._floor
        if floor < 0:
            floor = A
        elif A < floor:
            floor -= (floor - A) >> _FLOOR_FALL
        else:
            rise = (A - floor) >> _FLOOR_RISE
            cap = (floor >> _FLOOR_CAP) + 1
            floor += rise if rise < cap else cap
        self._floor = floor
        peak = self._peak
        peak = A if A > peak else peak - (peak >> _PEAK_FALL)
        self._peak = peak
        loud = A > _ABS_MIN and A * 9 > floor * 16 and A * 18 > peak
        r = self._pos
        voiced = False
        lag = num = den = gmin = gmax = 0
        if loud:
            a = self._a
            _amdf(y, a, o)
            p = o[4]
            gmin = o[5]
            gmax = o[6]
            if p:
                a0 = a[p - 1]
                a1 = a[p]
                a2 = a[p + 1]
                voiced = a1 * 5 < gmax * 2
                lag = p + _LAG_MIN
                num = a0 - a2
                den = 2 * (a0 - 2 * a1 + a2)
        # Speech opens on a voiced frame and stays open while frames are loud.
        active = loud and (self._run or voiced)
        self._run = active
        flag = 0
        if active:
            flag = _F_ACTIVE | _F_VOICED if voiced else _F_ACTIVE
        cond = active and L * 2 >= self._l2 * 3
        if cond and not self._cprev:
            flag |= _F_ONSET
        self._cprev = cond
        self._l2 = self._l1
        self._l1 = L
        self._rA[r] = A
        self._rD1[r] = o[1]
        self._rD2[r] = o[2]
        self._rL[r] = L
        self._rlag[r] = lag
        self._rnum[r] = num
        self._rden[r] = den
        self._rmin[r] = gmin
        self._rmax[r] = gmax
        self._rflag[r] = flag
        _shift(y, x)
        self._pos = r + 1 if r + 1 < _WIN else 0
        self._frames += 1
        f = self._frames
        if f >= _WIN and (f - _WIN) % _HOP == 0:
            self._window()

    def _frame_fixed(self, r):
        # Per-frame level, pitch and aperiodicity in fixed point (centi-dB, centi-semitones,
        # 1e-4), computed once per frame, so the window sums and sorts small integers.
        A = self._rA[r]
        lv = _DB * math.log((A if A > 1 else 1) / _LEVEL_REF) + _SINE_CORR_DB
        self._lvc[r] = round(100.0 * lv)
        mx = self._rmax[r]
        self._dipm[r] = self._rmin[r] * _DIP_SCALE // mx if mx > 0 else 0
        st = 0
        if self._rflag[r] & _F_VOICED:
            den = self._rden[r]
            frac = self._rnum[r] / den if den > 0 else 0.0
            if frac > 0.5:
                frac = 0.5
            elif frac < -0.5:
                frac = -0.5
            st = round(100.0 * (_ST * math.log(40.0 / (self._rlag[r] + frac))))
        self._stc[r] = st

    def _window(self):
        start = self._pos  # oldest frame of the window (ring is full)
        new = _WIN if self._frames == _WIN else _HOP
        for i in range(_WIN - new, _WIN):
            self._frame_fixed((start + i) % _WIN)
        flags = self._rflag
        lvc = self._lvc
        stc = self._stc
        srt = self._sort
        n_act = n_voi = n_on = n_pair = 0
        sA = sD1 = sD2 = sL = 0
        l_all = l_sum = dip = q1 = q2 = d_sum = 0
        wmax = -1000000000
        first = last = -1
        prev_v = False
        prev_st = 0
        for i in range(_WIN):
            r = (start + i) % _WIN
            fl = flags[r]
            lv = lvc[r]
            l_all += lv
            if fl & _F_ONSET:
                n_on += 1
            if fl & _F_ACTIVE:
                if first < 0:
                    first = i
                last = i
                n_act += 1
                l_sum += lv
                if lv > wmax:
                    wmax = lv
                sA += self._rA[r]
                sD1 += self._rD1[r]
                sD2 += self._rD2[r]
                sL += self._rL[r]
                dip += self._dipm[r]
            if fl & _F_VOICED:
                st = stc[r]
                n_voi += 1
                q1 += st
                q2 += st * st
                if prev_v:
                    d = st - prev_st
                    d_sum += d if d >= 0 else -d
                    n_pair += 1
                prev_v = True
                prev_st = st
            else:
                prev_v = False
        speech = n_act / _WIN
        level_sd = level_range = rel_level = rel_hf = voiced = pause = 0.0
        hf = hf2 = lf = nmean = aper = 0.0
        if n_act:
            level_db = l_sum / (100.0 * n_act)
            # Level spread over frames within 20 dB of the window's loudest (gain-robust).
            lo = wmax - _SPAN_CDB
            k = s1 = s2 = 0
            for i in range(_WIN):
                r = (start + i) % _WIN
                if flags[r] & _F_ACTIVE:
                    lv = lvc[r]
                    if lv >= lo:
                        srt[k] = lv
                        d = lv - wmax
                        s1 += d
                        s2 += d * d
                        k += 1
            nmean = wmax / 100.0 + s1 / (100.0 * k)
            if k >= 2:
                m1 = s1 / k
                var = (s2 / k - m1 * m1) / 10000.0
                level_sd = math.sqrt(var) if var > 0 else 0.0
                _sorted_head(srt, k)
                level_range = (srt[k - 1 - k // 10] - srt[k // 10]) / 100.0
            sA = sA if sA > 1 else 1
            sD1 = sD1 if sD1 > 1 else 1
            sD2 = sD2 if sD2 > 1 else 1
            sL = sL if sL > 1 else 1
            hf = _DB * math.log(sD1 / sA)
            hf2 = _DB * math.log(sD2 / sD1)
            lf = _DB * math.log(sL / (2.0 * sA))
            aper = dip / (_DIP_SCALE * 1.0 * n_act)
            voiced = n_voi / n_act
            pause = (last - first + 1 - n_act) / _WIN
        else:
            level_db = l_all / (100.0 * _WIN)
        f0_st = rel_f0 = f0_range = f0_sd = f0_delta = 0.0
        if n_voi:
            k = 0
            for i in range(_WIN):
                r = (start + i) % _WIN
                if flags[r] & _F_VOICED:
                    srt[k] = stc[r]
                    k += 1
            _sorted_head(srt, n_voi)
            f0_st = (srt[(n_voi - 1) // 2] + srt[n_voi // 2]) / 200.0
            if n_voi >= 2:
                f0_range = (srt[n_voi - 1 - n_voi // 10] - srt[n_voi // 10]) / 100.0
                mq = q1 / n_voi
                var = (q2 / n_voi - mq * mq) / 10000.0
                f0_sd = math.sqrt(var) if var > 0 else 0.0
            if n_pair:
                f0_delta = d_sum / (100.0 * n_pair)
        # Two voices (staff, customer) told apart by pitch: the window goes to the voice whose
        # F0 baseline is nearer; the second voice starts with the first window more than
        # _SPLIT_ST from the first. Unvoiced windows stay with the last voice.
        if n_voi:
            v0 = self._voices[0]
            v1 = self._voices[1]
            if v0[1].n == 0:
                self._voice = 0
            elif v1[1].n == 0:
                self._voice = 1 if abs(f0_st - v0[1].value) > _SPLIT_ST else 0
            else:
                self._voice = 0 if abs(f0_st - v0[1].value) <= abs(f0_st - v1[1].value) else 1
        b_level, b_f0, b_hf = self._voices[self._voice]
        if n_act:
            rel_level = b_level.relative(nmean)
            rel_hf = b_hf.relative(hf)
        if n_voi:
            rel_f0 = b_f0.relative(f0_st)
        if n_act >= _BASE_MIN_ACTIVE and n_voi >= _BASE_MIN_VOICED:
            b_level.update(nmean)
            b_hf.update(hf)
        if n_voi >= _BASE_MIN_VOICED:
            b_f0.update(f0_st)
        rate = n_on * (_SR / (_FRAME * _WIN))
        vec = array(
            "f",
            (
                speech,
                voiced,
                level_sd,
                level_range,
                rel_level,
                f0_st,
                rel_f0,
                f0_range,
                f0_sd,
                f0_delta,
                hf,
                hf2,
                lf,
                rel_hf,
                rate,
                pause,
                aper,
            ),
        )
        if self._out is None:
            self._out = []  # a fresh list per chunk that completed windows; () otherwise
        self._out.append(
            {
                "t": self._frames * _FRAME / _SR,
                "speech": speech,
                "level_db": level_db,
                "f0_hz": 100.0 * math.exp(f0_st / _ST) if n_voi else 0.0,
                "rate": rate,
                "features": vec,
            }
        )
