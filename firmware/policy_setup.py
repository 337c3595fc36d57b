# The validated cue-policy settings as the two arrays firmware/policy.py runs on. Used only by
# Policy() (at boot and per config message), which drops this module again after the call, so
# its code and the settings' key names are not resident on the headset.
#
# The order of the values below is the order of policy.py's index constants: floats _HOP ..
# _STRESS_RISE, ints _N_EMP .. _FROM_UNKNOWN; the rest of each array is state, zero here.
from array import array


def arrays(s, windows, n_float, n_int, f=None, n=None):
    """(array('d') of n_float + 45, array('i') of n_int) for validated settings `s`, the
    given arrays refilled in place (all state zero) when there are some; `windows(seconds,
    hop)` is firmware.cue_settings.windows."""
    hop = s["hop_s"]
    mode = s["smoothing"]
    k = s["smoothing_windows"] if mode == "median" else 1
    if f is None or n is None:
        # + the smoothers' buffers and scratch, 3 per window, for the longest median (15)
        f = array("d", bytes(8 * (n_float + 45)))
        n = array("i", bytes(4 * n_int))
    else:
        for i in range(len(f)):
            f[i] = 0
        for i in range(len(n)):
            n[i] = 0
    i = 0
    for key in (
        "hop_s min_speech pace_min_speech conversation_gap_s stress_threshold tense_threshold"
        " intense_threshold manager_rise empathize_refractory_s slow_down_refractory_s"
        " min_gap_s baseline_default baseline_max settle_margin rate_rise rate_margin"
        " level_rise_db level_margin_db"
    ).split():
        f[i] = s[key]
        i += 1
    f[i] = 2 / (windows(s["pace_window_s"], hop) + 1)  # EMA of pace and loudness
    f[i + 1] = s["ema_alpha"]
    # The smoothing span: k consecutive hops, with room for float rounding.
    f[i + 2] = s["smoothing_windows"] * hop + hop / 2
    f[i + 3] = s["stress_rise"]
    i = 0
    for key in (
        "empathize_after_s manager_after_s manager_rise_s intense_after_s settle_after_s"
        " baseline_s slow_down_after_s"
    ).split():
        n[i] = windows(s[key], hop)
        i += 1
    n[i] = s["cue_budget"]
    n[i + 1] = windows(s["speaker_baseline_s"], hop)
    n[i + 2] = k
    n[i + 3] = 0 if mode == "median" else (1 if mode == "ema" else 2)
    n[i + 4] = s["eu_mode"]
    # Outside EU mode only: an unattributed voice's stress may count as the customer's.
    n[i + 5] = s["stress_from_unknown"] and not s["eu_mode"]
    return f, n
