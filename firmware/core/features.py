# Prosody feature front end for the device (MicroPython). Spec: docs/features.md.
#
# Same numbers as the numpy reference models/features.py (parity-tested on every RAVDESS clip):
# each 25 ms frame is reduced to integers by viper loops over preallocated buffers (no heap
# allocation per frame); floats appear only when a 1 s window is completed (every 0.25 s).
#
#     fx = Features()
#     for rec in fx.process(pcm):   # int16 little-endian bytes/bytearray or array('h'), any size
#         rec["features"]           # array('f'), order = feature_names()
#     fx.new_conversation()         # baseline restarts (noise floor kept)
#     fx.reset()                    # a new stream
#
# process() returns () when no window completed (no allocation), else a new list of records.
#
# Heap: the extractor stays resident for the whole run, so it is three buffers and two viper
# loops rather than dozens of attributes, small objects and long bytecode (native code is not
# kept on the MicroPython heap). All integer state (decimated samples, AMDF, the per-frame ring,
# the scalars) is one array('i') at the _B*/_R* offsets below; the 16-bit input history, the
# per-frame level/pitch ring and a sort area are one array('h'); the baselines one array('d').
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
_SPAN_CDB = const(2000)  # 20 dB in centi-dB
_DIP_SCALE = const(10000)
# Float constants are written inline (each is a boxed float on the heap, no global name):
#   8.685889638065037 = 20 / ln 10 (dB), 17.312340490667562 = 12 / ln 2 (semitones),
#   0.9121785 = sine correction (dB). Scales and divisors that meet a float or divide an int
#   are ints (the result is the same float: int / int is float(a) / float(b)): 13107200 =
#   level reference (400 * 32768), 100 (centi-units), 7 semitones (voice split).

# The int buffer (offsets in ints). ptr32 loads are unsigned on 64-bit hosts, so everything the
# viper code reads back from it is kept >= 0 (signed values go to the 16-bit buffer instead).
_BY = const(0)  # decimated samples, 50 of history + this frame's 100
_BA = const(150)  # AMDF per lag (43); after a window: the window's sums (_W* below)
_FILL = const(193)  # samples of the current frame so far
_POS = const(194)  # ring slot of the next frame
_FRAMES = const(195)  # frames since reset (0: noise floor not yet known)
_FLOORV = const(196)  # noise floor
_PEAKV = const(197)
_RUN = const(198)  # speech open
_L1 = const(199)  # low-band level one and two frames back (onsets)
_L2 = const(200)
_CPREV = const(201)
_VOICE = const(202)  # voice (0, 1) of the last voiced window
_RA = const(203)  # per-frame ring, one row of _WIN per quantity
_RD1 = const(243)
_RD2 = const(283)
_RL = const(323)
_RNUM = const(363)
_RDEN = const(403)
_RMIN = const(443)
_RMAX = const(483)
_BN = const(523)
# Window sums, written by _win_stats at _BA + index.
_WACT = const(0)
_WVOI = const(1)
_WON = const(2)
_WPAIR = const(3)
_WA = const(4)
_WD1 = const(5)
_WD2 = const(6)
_WL = const(7)
_WLALL = const(8)
_WLSUM = const(9)
_WDIP = const(10)
_WQ1 = const(11)
_WQ2 = const(12)
_WDSUM = const(13)
_WMAX = const(14)
_WSPAN = const(15)  # first to last active frame
_WK = const(16)  # frames within 20 dB of the loudest
_WS1 = const(17)
_WS2 = const(18)
_WLRANGE = const(19)
_WMED2 = const(20)  # sum of the two middle F0 values
_WFRANGE = const(21)
# The 16-bit buffer: input history + frame, then per-frame rows: level (centi-dB), F0
# (centi-semitones), AMDF lag, flags, AMDF dip depth (1e-4); then a sort area.
_LVC = const(408)  # _XH + _FRAME
_STC = const(448)
_RLAG = const(488)
_RFLAG = const(528)
_DIPM = const(568)
_SRT = const(608)
_HN = const(648)
N_FEATURES = const(17)


def feature_names():
    """The order of rec["features"] (a new tuple: resident, it would take 1.1 KB of the
    headset's heap, and only tests and tools read it)."""
    return tuple(
        "speech voiced level_sd_db level_range_db level_rel_db f0_st f0_rel_st f0_range_st"
        " f0_sd_st f0_delta_st hf_db hf2_db lf_db hf_rel_db rate pause aperiodicity".split()
    )


@micropython.viper
def _copy_in(x: ptr16, b: ptr32, pcm: ptr16, pos: int, n: int) -> int:  # noqa: F821
    # As much of pcm[pos:n] as the current frame still takes; returns the new pos.
    fill = int(b[_FILL])
    take = _FRAME - fill
    if take > n - pos:
        take = n - pos
    i = 0
    while i < take:
        x[_XH + fill + i] = pcm[pos + i]
        i += 1
    b[_FILL] = fill + take
    return pos + take


@micropython.viper
def _frame(x: ptr16, b: ptr32) -> int:  # noqa: F821
    # One complete frame into the ring; returns 1 when it completes a window.
    # Level A = sum|x - mean|, first/second difference sums D1, D2 (high-frequency emphasis).
    m = 0
    i = _XH
    while i < _XH + _FRAME:
        m += (int(x[i]) ^ 0x8000) - 0x8000
        i += 1
    m = m // _FRAME
    A = 0
    d1 = 0
    d2 = 0
    p2 = (int(x[_XH - 2]) ^ 0x8000) - 0x8000
    p1 = (int(x[_XH - 1]) ^ 0x8000) - 0x8000
    i = _XH
    while i < _XH + _FRAME:
        v = (int(x[i]) ^ 0x8000) - 0x8000
        t = v - m
        A += t if t >= 0 else -t
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
        b[_BY + _LAG_MAX + j] = s + _YOFF
        sy += s
        j += 1
    # Low-band level L around the decimated mean (onsets).
    my = sy // _SUB
    L = 0
    j = _LAG_MAX
    while j < _LAG_MAX + _SUB:
        t = int(b[_BY + j]) - _YOFF - my
        L += t if t >= 0 else -t
        j += 1
    # Noise floor (slow rise, faster fall) and a decaying peak gate what counts as loud.
    frames = int(b[_FRAMES])
    floor = int(b[_FLOORV])
    if frames == 0:
        floor = A
    elif A < floor:
        floor -= (floor - A) >> _FLOOR_FALL
    else:
        t = (A - floor) >> _FLOOR_RISE
        e = (floor >> _FLOOR_CAP) + 1
        floor += t if t < e else e
    b[_FLOORV] = floor
    peak = int(b[_PEAKV])
    peak = A if A > peak else peak - (peak >> _PEAK_FALL)
    b[_PEAKV] = peak
    loud = 0
    if A > _ABS_MIN and A * 9 > floor * 16 and A * 18 > peak:
        loud = 1
    voiced = 0
    lag = 0
    num = 0
    den = 0
    gmin = 0
    gmax = 0
    if loud:
        # a[l - LAG_MIN] = sum_j |y[j] - y[j - l]| over this frame's 100 decimated samples.
        gmin = 0x3FFFFFFF
        i = 0
        while i < _NLAGS:
            t = i + _LAG_MIN
            s = 0
            j = _LAG_MAX
            while j < _LAG_MAX + _SUB:
                e = int(b[_BY + j]) - int(b[_BY + j - t])
                s += e if e >= 0 else -e
                j += 1
            b[_BA + i] = s
            if s < gmin:
                gmin = s
            if s > gmax:
                gmax = s
            i += 1
        # First interior local minimum in the lowest quarter of the range (avoids octave-down
        # picks).
        t = gmax - gmin
        i = 1
        while i < _NLAGS - 1:
            v = int(b[_BA + i])
            if v <= int(b[_BA + i - 1]) and v <= int(b[_BA + i + 1]) and (v - gmin) * 4 <= t:
                break
            i += 1
        if i < _NLAGS - 1:
            a0 = int(b[_BA + i - 1])
            a1 = int(b[_BA + i])
            a2 = int(b[_BA + i + 1])
            if a1 * 5 < gmax * 2:
                voiced = 1
            lag = i + _LAG_MIN
            num = a0 - a2
            den = 2 * (a0 - 2 * a1 + a2)
    # Speech opens on a voiced frame and stays open while frames are loud.
    active = 0
    if loud and (int(b[_RUN]) or voiced):
        active = 1
    b[_RUN] = active
    flag = 0
    if active:
        flag = _F_ACTIVE | _F_VOICED if voiced else _F_ACTIVE
    cond = 0
    if active and L * 2 >= int(b[_L2]) * 3:
        cond = 1
    if cond and not int(b[_CPREV]):
        flag |= _F_ONSET
    b[_CPREV] = cond
    b[_L2] = b[_L1]
    b[_L1] = L
    r = int(b[_POS])
    b[_RA + r] = A
    b[_RD1 + r] = d1
    b[_RD2 + r] = d2
    b[_RL + r] = L
    x[_RLAG + r] = lag
    b[_RNUM + r] = num
    b[_RDEN + r] = den
    b[_RMIN + r] = gmin
    b[_RMAX + r] = gmax
    x[_RFLAG + r] = flag
    b[_POS] = r + 1 if r + 1 < _WIN else 0
    # Keep the last 50 decimated samples and the last 8 input samples as history.
    j = 0
    while j < _LAG_MAX:
        b[_BY + j] = b[_BY + j + _SUB]
        j += 1
    j = 0
    while j < _XH:
        x[j] = x[j + _FRAME]
        j += 1
    frames += 1
    b[_FRAMES] = frames
    if frames >= _WIN and (frames - _WIN) % _HOP == 0:
        return 1
    return 0


@micropython.viper
def _win_stats(b: ptr32, h: ptr16):  # noqa: F821
    # The window's integer sums over the ring (oldest frame first), into b[_BA + _W*].
    # Worst cases fit 32 bits (device ints): sA <= 40 * 13.1e6, sD2 and sL <= 40 * 52.4e6.
    start = int(b[_POS])
    n_act = 0
    n_voi = 0
    n_on = 0
    n_pair = 0
    sA = 0
    sD1 = 0
    sD2 = 0
    sL = 0
    l_all = 0
    l_sum = 0
    dip = 0
    q1 = 0
    q2 = 0
    d_sum = 0
    wmax = -1000000000
    first = -1
    last = -1
    prev_v = 0
    prev_st = 0
    i = 0
    while i < _WIN:
        r = (start + i) % _WIN
        fl = int(h[_RFLAG + r])
        lv = (int(h[_LVC + r]) ^ 0x8000) - 0x8000
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
            sA += int(b[_RA + r])
            sD1 += int(b[_RD1 + r])
            sD2 += int(b[_RD2 + r])
            sL += int(b[_RL + r])
            dip += int(h[_DIPM + r])
        if fl & _F_VOICED:
            st = (int(h[_STC + r]) ^ 0x8000) - 0x8000
            n_voi += 1
            q1 += st
            q2 += st * st
            if prev_v:
                d = st - prev_st
                d_sum += d if d >= 0 else -d
                n_pair += 1
            prev_v = 1
            prev_st = st
        else:
            prev_v = 0
        i += 1
    b[_BA + _WACT] = n_act
    b[_BA + _WVOI] = n_voi
    b[_BA + _WON] = n_on
    b[_BA + _WPAIR] = n_pair
    b[_BA + _WA] = sA
    b[_BA + _WD1] = sD1
    b[_BA + _WD2] = sD2
    b[_BA + _WL] = sL
    b[_BA + _WLALL] = l_all
    b[_BA + _WLSUM] = l_sum
    b[_BA + _WDIP] = dip
    b[_BA + _WQ1] = q1
    b[_BA + _WQ2] = q2
    b[_BA + _WDSUM] = d_sum
    b[_BA + _WMAX] = wmax
    b[_BA + _WSPAN] = last - first + 1
    # Two sorted lists: pass 0 the levels within 20 dB of the window's loudest (level spread,
    # gain-robust), pass 1 the F0 of the voiced frames. Insertion sort in the sort area.
    lo = wmax - _SPAN_CDB
    p = 0
    while p < 2:
        k = 0
        s1 = 0
        s2 = 0
        if (p == 0 and n_act) or (p == 1 and n_voi):
            i = 0
            while i < _WIN:
                r = (start + i) % _WIN
                fl = int(h[_RFLAG + r])
                if p == 0:
                    lv = (int(h[_LVC + r]) ^ 0x8000) - 0x8000
                    if fl & _F_ACTIVE and lv >= lo:
                        h[_SRT + k] = lv
                        d = lv - wmax
                        s1 += d
                        s2 += d * d
                        k += 1
                elif fl & _F_VOICED:
                    h[_SRT + k] = h[_STC + r]
                    k += 1
                i += 1
            j = 1
            while j < k:
                v = (int(h[_SRT + j]) ^ 0x8000) - 0x8000
                m = j
                while m > 0 and (int(h[_SRT + m - 1]) ^ 0x8000) - 0x8000 > v:
                    h[_SRT + m] = h[_SRT + m - 1]
                    m -= 1
                h[_SRT + m] = v
                j += 1
        if k:
            # Differences and sums of the biased (^ 0x8000) values are those of the values.
            i = (int(h[_SRT + k - 1 - k // 10]) ^ 0x8000) - (int(h[_SRT + k // 10]) ^ 0x8000)
            if p == 0:
                b[_BA + _WLRANGE] = i
            else:
                b[_BA + _WFRANGE] = i
                j = int(h[_SRT + (k - 1) // 2]) ^ 0x8000
                b[_BA + _WMED2] = j + (int(h[_SRT + k // 2]) ^ 0x8000) - 0x10000
        if p == 0:
            b[_BA + _WK] = k
            b[_BA + _WS1] = s1
            b[_BA + _WS2] = s2
        p += 1


class Features:
    def __init__(self):
        self._x = array("h", bytes(2 * _HN))
        self._b = array("i", bytes(4 * _BN))
        # Baselines, voice v in 0..1, kind k in 0..2 (level, F0, spectral balance):
        # count at 6v + 2k, value at 6v + 2k + 1.
        self._base = array("d", bytes(8 * 12))
        self._out = None
        self.reset()

    def reset(self):
        """Forget everything: a new audio stream."""
        x = self._x
        for i in range(_HN):
            x[i] = 0
        b = self._b
        for i in range(_BN):
            b[i] = _YOFF if i < _BA else 0
        self._out = None
        self.new_conversation()

    def new_conversation(self):
        """Restart the per-conversation baseline; noise floor and audio history stay."""
        base = self._base
        for i in range(12):
            base[i] = 0.0
        self._b[_VOICE] = 0

    def process(self, pcm):
        """Feed int16 PCM; returns the list of window records completed by this chunk."""
        self._out = None
        n = len(pcm)
        if not isinstance(pcm, array):
            if n & 1:
                raise ValueError("PCM chunk must hold whole int16 samples (even byte count)")
            n >>= 1
        x = self._x
        b = self._b
        pos = 0
        while pos < n:
            pos = _copy_in(x, b, pcm, pos, n)
            if b[_FILL] == _FRAME:
                b[_FILL] = 0
                if _frame(x, b):
                    self._window()
        # The records are the caller's: not kept here, so the heap in use after a chunk does
        # not depend on what the last window held.
        out = self._out
        self._out = None
        return out if out is not None else ()

    def _window(self):
        b = self._b
        h = self._x
        start = b[_POS]  # oldest frame of the window (ring is full)
        # Per-frame level, pitch and aperiodicity in fixed point (centi-dB, centi-semitones,
        # 1e-4), computed once per frame (its first window), so windows sum and sort integers.
        for i in range(_WIN - (_WIN if b[_FRAMES] == _WIN else _HOP), _WIN):
            r = (start + i) % _WIN
            A = b[_RA + r]
            lv = 8.685889638065037 * math.log((A if A > 1 else 1) / 13107200) + 0.9121785
            h[_LVC + r] = round(100 * lv)
            mx = b[_RMAX + r]
            h[_DIPM + r] = b[_RMIN + r] * _DIP_SCALE // mx if mx > 0 else 0
            st = 0
            if h[_RFLAG + r] & _F_VOICED:
                den = b[_RDEN + r]
                frac = b[_RNUM + r] / den if den > 0 else 0.0
                if frac > 0.5:
                    frac = 0.5
                elif frac < -0.5:
                    frac = -0.5
                st = round(100 * (17.312340490667562 * math.log(40 / (h[_RLAG + r] + frac))))
            h[_STC + r] = st
        _win_stats(b, h)
        n_act = b[_BA + _WACT]
        n_voi = b[_BA + _WVOI]
        speech = n_act / _WIN
        level_sd = level_range = rel_level = rel_hf = voiced = pause = 0.0
        hf = hf2 = lf = nmean = aper = 0.0
        if n_act:
            level_db = b[_BA + _WLSUM] / (100 * n_act)
            k = b[_BA + _WK]
            s1 = b[_BA + _WS1]
            nmean = b[_BA + _WMAX] / 100 + s1 / (100 * k)
            if k >= 2:
                m1 = s1 / k
                var = (b[_BA + _WS2] / k - m1 * m1) / 10000
                level_sd = math.sqrt(var) if var > 0 else 0.0
                level_range = b[_BA + _WLRANGE] / 100
            sA = b[_BA + _WA]
            sD1 = b[_BA + _WD1]
            sD2 = b[_BA + _WD2]
            sL = b[_BA + _WL]
            sA = sA if sA > 1 else 1
            sD1 = sD1 if sD1 > 1 else 1
            sD2 = sD2 if sD2 > 1 else 1
            sL = sL if sL > 1 else 1
            hf = 8.685889638065037 * math.log(sD1 / sA)
            hf2 = 8.685889638065037 * math.log(sD2 / sD1)
            lf = 8.685889638065037 * math.log(sL / (2 * sA))
            aper = b[_BA + _WDIP] / (_DIP_SCALE * n_act)
            voiced = n_voi / n_act
            pause = (b[_BA + _WSPAN] - n_act) / _WIN
        else:
            level_db = b[_BA + _WLALL] / (100 * _WIN)
        f0_st = rel_f0 = f0_range = f0_sd = f0_delta = 0.0
        base = self._base
        if n_voi:
            f0_st = b[_BA + _WMED2] / 200
            if n_voi >= 2:
                f0_range = b[_BA + _WFRANGE] / 100
                mq = b[_BA + _WQ1] / n_voi
                var = (b[_BA + _WQ2] / n_voi - mq * mq) / 10000
                f0_sd = math.sqrt(var) if var > 0 else 0.0
            n = b[_BA + _WPAIR]
            if n:
                f0_delta = b[_BA + _WDSUM] / (100 * n)
            # Two voices (staff, customer) told apart by pitch: the window goes to the voice
            # whose F0 baseline is nearer; the second voice starts with the first window more
            # than 7 semitones from the first. Unvoiced windows stay with the last voice.
            if base[2] == 0:
                b[_VOICE] = 0
            elif base[8] == 0:
                b[_VOICE] = 1 if abs(f0_st - base[3]) > 7 else 0
            else:
                b[_VOICE] = 0 if abs(f0_st - base[3]) <= abs(f0_st - base[9]) else 1
        # The voice's baselines: cumulative mean over the first _BASE_WARM updates, then a
        # slow running mean; relative values are 0 before the first update.
        v = 6 * b[_VOICE]
        if n_act:
            if base[v]:
                rel_level = nmean - base[v + 1]
            if base[v + 4]:
                rel_hf = hf - base[v + 5]
        if n_voi and base[v + 2]:
            rel_f0 = f0_st - base[v + 3]
        for j in (0, 2, 4):  # level, F0, spectral balance
            if j == 2:
                ok = n_voi >= _BASE_MIN_VOICED
                x = f0_st
            else:
                ok = n_act >= _BASE_MIN_ACTIVE and n_voi >= _BASE_MIN_VOICED
                x = nmean if j == 0 else hf
            if ok:
                n = base[v + j]
                if n < _BASE_WARM:
                    n += 1
                    base[v + j] = n
                    base[v + j + 1] += (x - base[v + j + 1]) / n
                else:
                    base[v + j + 1] += (x - base[v + j + 1]) / _BASE_SLOW
        rate = b[_BA + _WON] * (_SR / (_FRAME * _WIN))
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
                "t": b[_FRAMES] * _FRAME / _SR,
                "speech": speech,
                "level_db": level_db,
                "f0_hz": 100 * math.exp(f0_st / 17.312340490667562) if n_voi else 0.0,
                "rate": rate,
                "features": vec,
            }
        )
