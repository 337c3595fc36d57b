# Cue-policy settings: one table of keys, defaults and limits, and one validator that the Pi
# agent, the ESP32 firmware and the companion's config editor all share. Portable: runs
# unchanged on MicroPython and CPython (no dataclasses, no typing, no I/O).
#
# Why each default is what it is: docs/policy.md. Durations are in seconds and turned into a
# number of windows (hop_s apart) by the policy, so a change of hop keeps their meaning.

# The limits, one line per setting: "key kind [limits] [unit]". kind: num (lo hi), int (lo hi,
# whole numbers), choice (comma-separated options) or bool. Kept as text and parsed only for the
# keys being checked: as a tuple of tuples of floats the table cost ~9 KB of the headset's heap
# for the whole run, as text ~1.5 KB. The defaults, same order, are the dict below (built in
# one piece, its keys interned). `SPEC` still gives the rows as tuples (key, default, limits,
# unit): limits (lo, hi), a tuple of strings for a choice, None for a bool; an int default
# means the setting takes whole numbers.
_TABLE = """
# windows and scores
hop_s num 0.05 2.0 s
min_speech num 0.05 1.0 fraction
smoothing choice median,ema,none
smoothing_windows int 1 15 windows
ema_alpha num 0.05 1.0
# empathize
stress_threshold num 0.3 0.95 score
empathize_after_s num 0.25 10.0 s
empathize_refractory_s num 0.0 600.0 s
# call_manager
manager_after_s num 1.0 120.0 s
manager_rise num 0.05 0.5 score
manager_rise_s num 0.25 10.0 s
intense_threshold num 0.5 1.0 score
intense_after_s num 0.25 10.0 s
# settled and the per-conversation baseline
settle_margin num 0.0 0.4 score
settle_after_s num 0.25 60.0 s
baseline_s num 0.25 30.0 s
baseline_default num 0.0 0.9 score
baseline_max num 0.0 0.9 score
# slow_down (pace and loudness)
tense_threshold num 0.1 0.95 score
slow_down_after_s num 0.25 10.0 s
slow_down_refractory_s num 0.0 600.0 s
pace_min_speech num 0.05 1.0 fraction
pace_window_s num 0.25 10.0 s
speaker_baseline_s num 0.25 30.0 s
rate_rise num 0.1 5.0 onsets/s
rate_margin num 0.0 5.0 onsets/s
level_rise_db num 1.0 30.0 dB
level_margin_db num 0.0 30.0 dB
# alert fatigue and conversations
cue_budget int 0 50 cues
min_gap_s num 0.0 60.0 s
conversation_gap_s num 2.0 600.0 s
# who is talking
attribution choice counter,headset,none
stress_from_unknown bool
eu_mode bool
headset_wearer_db num -80.0 0.0 dBFS
near_field_db num 3.0 40.0 dB
pitch_tol_st num 0.5 12.0 semitones
level_tol_db num 1.0 30.0 dB
enrol_min_s num 2.0 60.0 s
"""

_DEFAULTS = {
    # windows and scores
    "hop_s": 0.25,
    "min_speech": 0.4,
    "smoothing": "median",
    "smoothing_windows": 3,
    "ema_alpha": 0.5,
    # empathize
    "stress_threshold": 0.6,
    "empathize_after_s": 0.75,
    "empathize_refractory_s": 20.0,
    # call_manager
    "manager_after_s": 6.0,
    "manager_rise": 0.15,
    "manager_rise_s": 1.0,
    "intense_threshold": 0.9,
    "intense_after_s": 1.0,
    # settled and the per-conversation baseline
    "settle_margin": 0.1,
    "settle_after_s": 2.0,
    "baseline_s": 2.0,
    "baseline_default": 0.3,
    "baseline_max": 0.4,
    # slow_down (pace and loudness)
    "tense_threshold": 0.5,
    "slow_down_after_s": 1.0,
    "slow_down_refractory_s": 15.0,
    "pace_min_speech": 0.6,
    "pace_window_s": 2.0,
    "speaker_baseline_s": 2.0,
    "rate_rise": 0.8,
    "rate_margin": 0.3,
    "level_rise_db": 4.0,
    "level_margin_db": 3.0,
    # alert fatigue and conversations
    "cue_budget": 4,
    "min_gap_s": 3.0,
    "conversation_gap_s": 8.0,
    # who is talking
    "attribution": "counter",
    "stress_from_unknown": False,
    "eu_mode": False,
    "headset_wearer_db": -30.0,
    "near_field_db": 12.0,
    "pitch_tol_st": 3.0,
    "level_tol_db": 6.0,
    "enrol_min_s": 5.0,
}


def _num(text, kind):
    return int(text) if kind == "int" else float(text)


def _lines():
    # The fields of each setting's line, walking the text (no list of all lines at once).
    i = 0
    while True:
        j = _TABLE.find("\n", i)
        if j < 0:
            return
        if j > i and _TABLE[i] != "#":
            yield _TABLE[i:j].split(" ")
        i = j + 1


def _as_row(f):
    kind = f[1]
    default = _DEFAULTS[f[0]]
    if kind == "bool":
        return (f[0], default, None, "")
    if kind == "choice":
        return (f[0], default, tuple(f[2].split(",")), "")
    return (f[0], default, (_num(f[2], kind), _num(f[3], kind)), f[4] if len(f) > 4 else "")


def rows():
    """Each setting as (key, default, limits, unit), in table order (parsed on every call)."""
    for f in _lines():
        yield _as_row(f)


def _row(key):
    i = _TABLE.find("\n" + key + " ") if isinstance(key, str) and key else -1
    if i < 0:
        return None
    row = _as_row(_TABLE[i + 1 : _TABLE.find("\n", i + 1)].split(" "))
    return row if row[0] == key else None  # a "key" with spaces in it matched a line's middle


def __getattr__(name):
    # SPEC on demand (companion, docs checks): the device never builds it.
    if name == "SPEC":
        return tuple(rows())
    raise AttributeError(name)


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
    return _DEFAULTS.copy()  # one allocation: no dict grown key by key in a busy heap


def _bigrams(s):
    return set(s[i : i + 2] for i in range(len(s) - 1))


def _closest(key):
    # The known key sharing most letter pairs with a misspelt one ("empathise_after_s").
    best, best_n = None, 1
    kb = _bigrams(key)
    for row in rows():
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
    for key in given:
        row = _row(key)
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
