# Cue-policy settings: one table of keys, defaults and limits, and one validator that the Pi
# agent, the ESP32 firmware and the companion's config editor all share. Portable: runs
# unchanged on MicroPython and CPython (no dataclasses, no typing, no I/O).
#
# Why each default is what it is: docs/policy.md. Durations are in seconds and turned into a
# number of windows (hop_s apart) by the policy, so a change of hop keeps their meaning.

# (key, default, limits, unit). limits: (lo, hi) for numbers, a tuple of strings for a choice,
# None for a bool. An int default means the setting takes whole numbers.
SPEC = (
    # windows and scores
    ("hop_s", 0.25, (0.05, 2.0), "s"),
    ("min_speech", 0.4, (0.05, 1.0), "fraction"),
    ("smoothing", "median", ("median", "ema", "none"), ""),
    ("smoothing_windows", 3, (1, 15), "windows"),
    ("ema_alpha", 0.5, (0.05, 1.0), ""),
    # empathize
    ("stress_threshold", 0.6, (0.3, 0.95), "score"),
    ("empathize_after_s", 0.75, (0.25, 10.0), "s"),
    ("empathize_refractory_s", 20.0, (0.0, 600.0), "s"),
    # call_manager
    ("manager_after_s", 6.0, (1.0, 120.0), "s"),
    ("manager_rise", 0.15, (0.05, 0.5), "score"),
    ("manager_rise_s", 1.0, (0.25, 10.0), "s"),
    ("intense_threshold", 0.9, (0.5, 1.0), "score"),
    ("intense_after_s", 1.0, (0.25, 10.0), "s"),
    # settled and the per-conversation baseline
    ("settle_margin", 0.1, (0.0, 0.4), "score"),
    ("settle_after_s", 2.0, (0.25, 60.0), "s"),
    ("baseline_s", 2.0, (0.25, 30.0), "s"),
    ("baseline_default", 0.3, (0.0, 0.9), "score"),
    ("baseline_max", 0.4, (0.0, 0.9), "score"),
    # slow_down (pace and loudness)
    ("tense_threshold", 0.5, (0.1, 0.95), "score"),
    ("slow_down_after_s", 1.0, (0.25, 10.0), "s"),
    ("slow_down_refractory_s", 15.0, (0.0, 600.0), "s"),
    ("pace_min_speech", 0.6, (0.05, 1.0), "fraction"),
    ("pace_window_s", 2.0, (0.25, 10.0), "s"),
    ("speaker_baseline_s", 2.0, (0.25, 30.0), "s"),
    ("rate_rise", 0.8, (0.1, 5.0), "onsets/s"),
    ("rate_margin", 0.3, (0.0, 5.0), "onsets/s"),
    ("level_rise_db", 4.0, (1.0, 30.0), "dB"),
    ("level_margin_db", 3.0, (0.0, 30.0), "dB"),
    # alert fatigue and conversations
    ("cue_budget", 4, (0, 50), "cues"),
    ("min_gap_s", 3.0, (0.0, 60.0), "s"),
    ("conversation_gap_s", 8.0, (2.0, 600.0), "s"),
    # who is talking
    ("attribution", "counter", ("counter", "headset", "none"), ""),
    ("stress_from_unknown", False, None, ""),
    ("eu_mode", False, None, ""),
    ("headset_wearer_db", -30.0, (-80.0, 0.0), "dBFS"),
    ("near_field_db", 12.0, (3.0, 40.0), "dB"),
    ("pitch_tol_st", 3.0, (0.5, 12.0), "semitones"),
    ("level_tol_db", 6.0, (1.0, 30.0), "dB"),
    ("enrol_min_s", 5.0, (2.0, 60.0), "s"),
)

# Durations that become a number of windows: each must be at least one hop long.
_WINDOWED = (
    "empathize_after_s",
    "manager_rise_s",
    "intense_after_s",
    "settle_after_s",
    "baseline_s",
    "slow_down_after_s",
    "pace_window_s",
    "speaker_baseline_s",
)


class SettingsError(ValueError):
    pass


def defaults():
    """A fresh dict of every setting at its default."""
    out = {}
    for row in SPEC:
        out[row[0]] = row[1]
    return out


def _bigrams(s):
    return set(s[i : i + 2] for i in range(len(s) - 1))


def _closest(key):
    # The known key sharing most letter pairs with a misspelt one ("empathise_after_s").
    best, best_n = None, 1
    kb = _bigrams(key)
    for row in SPEC:
        n = len(kb & _bigrams(row[0]))
        if n > best_n:
            best, best_n = row[0], n
    return best


def _fmt(x):
    if isinstance(x, float) and x == int(x):
        return str(int(x))
    return str(x)


def _check(row, value):
    """The value to store, or a fix-it message (str) prefixed with '!'."""
    key, default, limits, unit = row
    if limits is None:
        if value is True or value is False:
            return value
        return "!%s must be true or false (got %r)" % (key, value)
    if isinstance(default, str):
        if value in limits:
            return value
        return "!%s must be one of %s (got %r)" % (key, ", ".join(limits), value)
    if value is True or value is False or not isinstance(value, (int, float)):
        return "!%s must be a number in %s (got %r); the default is %s" % (
            key,
            unit or "plain units",
            value,
            _fmt(default),
        )
    if value != value:
        return "!%s must be a number, not NaN; the default is %s" % (key, _fmt(default))
    if isinstance(default, int) and value != int(value):
        return "!%s must be a whole number (got %r); the default is %s" % (key, value, default)
    lo, hi = limits
    if not lo <= value <= hi:
        return "!%s must be between %s and %s %s (got %s); the default is %s" % (
            key,
            _fmt(lo),
            _fmt(hi),
            unit,
            _fmt(value),
            _fmt(default),
        )
    if isinstance(default, int):
        return int(value)
    return float(value)


def _cross(s, errors):
    # Rules between settings: each message says which one to move and why it matters.
    stress = _fmt(s["stress_threshold"])
    if s["intense_threshold"] <= s["stress_threshold"]:
        errors.append(
            "intense_threshold (%s) must be above stress_threshold (%s): 'very intense' skips "
            "empathize and calls the manager at once; raise intense_threshold or lower "
            "stress_threshold" % (_fmt(s["intense_threshold"]), stress)
        )
    if s["tense_threshold"] > s["stress_threshold"]:
        errors.append(
            "tense_threshold (%s) must not be above stress_threshold (%s): a conversation is "
            "tense before the customer is stressed enough for empathize; lower "
            "tense_threshold" % (_fmt(s["tense_threshold"]), stress)
        )
    if s["baseline_max"] + s["settle_margin"] >= s["stress_threshold"]:
        errors.append(
            "baseline_max + settle_margin (%s) must stay below stress_threshold (%s), or a "
            "conversation could count as settled while still stressed; lower baseline_max or "
            "settle_margin" % (_fmt(s["baseline_max"] + s["settle_margin"]), stress)
        )
    if s["baseline_default"] > s["baseline_max"]:
        errors.append(
            "baseline_default (%s) must not be above baseline_max (%s); lower "
            "baseline_default" % (_fmt(s["baseline_default"]), _fmt(s["baseline_max"]))
        )
    hop = _fmt(s["hop_s"])
    for key in _WINDOWED:
        if s[key] < s["hop_s"]:
            errors.append(
                "%s (%s s) is shorter than one window hop (hop_s = %s s); use at least %s"
                % (key, _fmt(s[key]), hop, hop)
            )
    if s["conversation_gap_s"] < 4 * s["hop_s"]:
        errors.append(
            "conversation_gap_s must be at least 4 window hops (%s s) so a pause between words "
            "does not end the conversation" % _fmt(4 * s["hop_s"])
        )
    if s["eu_mode"] and s["stress_from_unknown"]:
        errors.append(
            "stress_from_unknown must be false in EU mode: an unattributed voice may be the staff "
            "member's, and EU mode infers nothing about the staff voice; set it to false"
        )


def validate_settings(given):
    """(settings, errors). `settings` is every key, with each valid given value applied and
    the default kept for each invalid one; apply it only when `errors` is empty (a device
    keeps its current settings and reports the errors)."""
    s = defaults()
    errors = []
    if given is None:
        given = {}
    if not isinstance(given, dict):
        return s, ["settings must be a JSON object of name: value pairs"]
    rows = {}
    for row in SPEC:
        rows[row[0]] = row
    for key in given:
        row = rows.get(key)
        if row is None:
            hint = _closest(key) if isinstance(key, str) else None
            if hint:
                errors.append("unknown setting %r; did you mean %r?" % (key, hint))
            else:
                errors.append("unknown setting %r" % (key,))
            continue
        got = _check(row, given[key])
        if isinstance(got, str) and got[:1] == "!":
            errors.append(got[1:])
        else:
            s[key] = got
    if not errors:
        _cross(s, errors)
    return s, errors


def windows(seconds, hop_s):
    """How many windows `seconds` spans at `hop_s` (at least 1), robust to float error."""
    n = int(seconds / hop_s + 0.5)
    return n if n > 0 else 1
