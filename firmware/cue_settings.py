# Cue-policy settings: one table of keys, defaults and limits, and one validator that the Pi
# agent, the ESP32 firmware and the companion's config editor all share. Portable: runs
# unchanged on MicroPython and CPython (no dataclasses, no typing, no I/O).
#
# Why each default is what it is: docs/policy.md. Durations are in seconds and turned into a
# number of windows (hop_s apart) by the policy, so a change of hop keeps their meaning.
#
# On the headset this module is not resident: firmware/app.py imports it at boot and when a
# config message arrives, and drops it after (the policy keeps only the validated dict). It is
# then loaded into a fragmented heap, so nothing in it is one big block: the table is a few
# short texts, parsed on demand (no resident dict or tuple of boxed floats), and every
# function is small.

# One line per setting: "key kind default [limits] [unit] [w]". kind: num (lo hi), int (lo hi,
# whole numbers), choice (comma-separated options) or bool. w: a duration that becomes a
# number of windows, so it must be at least one hop long. `SPEC` gives the rows as tuples
# (key, default, limits, unit): limits (lo, hi), a tuple of strings for a choice, None for a
# bool; an int default means the setting takes whole numbers. Each text starts and ends with
# a newline, so "\nkey " finds a key's line.
_TABLE = (
    # windows and scores
    """
hop_s num 0.25 0.05 2.0 s
min_speech num 0.4 0.05 1.0 fraction
smoothing choice median median,ema,none
smoothing_windows int 3 1 15 windows
ema_alpha num 0.5 0.05 1.0
""",
    # empathize
    """
stress_threshold num 0.6 0.3 0.95 score
stress_rise num 0.35 0.0 0.9 score
empathize_after_s num 1.5 0.25 10.0 s w
empathize_refractory_s num 20.0 0.0 600.0 s
""",
    # call_manager
    """
manager_after_s num 6.0 1.0 120.0 s
manager_rise num 0.15 0.05 0.5 score
manager_rise_s num 1.0 0.25 10.0 s w
intense_threshold num 0.9 0.5 1.0 score
intense_after_s num 1.0 0.25 10.0 s w
""",
    # settled and the per-conversation baseline
    """
settle_margin num 0.1 0.0 0.4 score
settle_after_s num 2.0 0.25 60.0 s w
baseline_s num 2.0 0.25 30.0 s w
baseline_default num 0.3 0.0 0.9 score
baseline_max num 0.4 0.0 0.9 score
""",
    # slow_down
    """
tense_threshold num 0.5 0.1 0.95 score
slow_down_after_s num 1.0 0.25 10.0 s w
slow_down_refractory_s num 15.0 0.0 600.0 s
""",
    # pace and loudness (for slow_down)
    """
pace_min_speech num 0.6 0.05 1.0 fraction
pace_window_s num 2.0 0.25 10.0 s w
speaker_baseline_s num 2.0 0.25 30.0 s w
rate_rise num 0.8 0.1 5.0 onsets/s
rate_margin num 0.3 0.0 5.0 onsets/s
level_rise_db num 4.0 1.0 30.0 dB
level_margin_db num 3.0 0.0 30.0 dB
""",
    # alert fatigue and conversations
    """
cue_budget int 4 0 50 cues
min_gap_s num 3.0 0.0 60.0 s
conversation_gap_s num 8.0 2.0 600.0 s
""",
    # who is talking
    """
attribution choice counter counter,headset,none
stress_from_unknown bool false
eu_mode bool false
headset_wearer_db num -30.0 -80.0 0.0 dBFS
near_field_db num 12.0 3.0 40.0 dB
pitch_tol_st num 3.0 0.5 12.0 semitones
level_tol_db num 6.0 1.0 30.0 dB
enrol_min_s num 5.0 2.0 60.0 s
""",
)


def _lines(key=None):
    """(text, start, end) of each setting's line, in table order; with `key`, only its line.
    Nothing is sliced or parsed here: the callers take only the fields they need."""
    if key is not None:
        key = "\n" + key + " "
    for part in _TABLE:
        if key is None:
            i = 1
            while i < len(part):
                j = part.find("\n", i)
                yield part, i, j
                i = j + 1
            continue
        i = part.find(key) + 1
        if i:
            yield part, i, part.find("\n", i)
            return


def _row(line):
    # (key, default, limits, unit) from the fields of one line.
    f = line.split(" ")
    kind = f[1]
    if kind == "bool":
        return (f[0], f[2] == "true", None, "")
    if kind == "choice":
        return (f[0], f[2], tuple(f[3].split(",")), "")
    num = int if kind == "int" else float
    return (f[0], num(f[2]), (num(f[3]), num(f[4])), f[5] if len(f) > 5 else "")


def _default(p, i, j):
    # The default of the line p[i:j], parsed from its third field alone.
    k = p.find(" ", i)
    d = p.find(" ", k + 1) + 1
    e = p.find(" ", d)
    text = p[d : e if 0 < e < j else j]
    if p.startswith("num", k + 1):
        return float(text)
    if p.startswith("int", k + 1):
        return int(text)
    if p.startswith("bool", k + 1):
        return text == "true"
    return text


def __getattr__(name):
    # SPEC on demand (companion, docs checks): the device never builds it.
    if name == "SPEC":
        return tuple(_row(p[i:j]) for p, i, j in _lines())
    raise AttributeError(name)


class SettingsError(ValueError):
    pass


class _Checked:
    """What checked() returns: `[key]` gives the checked given value, else the default,
    parsed from the table when asked for. No dict of all the settings is made: its table of
    39 keys is one 624 B block, which the headset's heap, cut up after a day of events, may
    not have when a config message arrives."""

    def __init__(self, values):
        self.values = values

    def __getitem__(self, key):
        if key in self.values:
            return self.values[key]
        for p, i, j in _lines(key):
            return _default(p, i, j)
        raise KeyError(key)


def defaults():
    """A fresh dict of every setting at its default."""
    n = 0
    for p in _TABLE:
        n += p.count("\n") - 1
    keys = [None] * n
    values = [None] * n
    n = 0
    for p, i, j in _lines():
        keys[n] = p[i : p.find(" ", i)]
        values[n] = _default(p, i, j)
        n += 1
    s = dict.fromkeys(keys)  # sized once for all the keys: never grown key by key
    for k in range(n):
        s[keys[k]] = values[k]
    return s


def _check(row, value):
    """The value to store, or why it is refused: "!" and a code for firmware/cue_messages.py."""
    key, default, limits, unit = row
    if limits is None:
        return value if value is True or value is False else "!b"
    if isinstance(default, str):
        return value if value in limits else "!c"
    if value is True or value is False or not isinstance(value, (int, float)):
        return "!n"
    if value != value:
        return "!N"
    if isinstance(default, int) and value != int(value):
        return "!w"
    if not limits[0] <= value <= limits[1]:
        return "!r"
    if isinstance(default, int):
        return int(value)
    return float(value)


def _rules(s, found):
    # The rules between settings, in order; a broken one adds its code to `found`
    # (firmware/cue_messages.py says which value to move and why it matters).
    stress = s["stress_threshold"]
    if s["intense_threshold"] <= stress:
        found.append("i")
    if s["tense_threshold"] > stress:
        found.append("t")
    if s["baseline_max"] + s["settle_margin"] >= stress:
        found.append("s")
    if s["baseline_default"] > s["baseline_max"]:
        found.append("d")
    hop = s["hop_s"]
    for p, i, j in _lines():  # the durations, marked w: each at least one hop long
        if p.startswith(" w", j - 2):
            key = p[i : p.find(" ", i)]
            if s[key] < hop:
                found.append(key)
    if s["conversation_gap_s"] < 4 * hop:
        found.append("g")
    if s["eu_mode"] and s["stress_from_unknown"]:
        found.append("e")


def checked(given):
    """(settings, errors) as validate_settings gives them, for code that only reads
    `settings[key]` (the policy, the attribution, the headset's config check): `settings`
    holds the valid given values and finds every other key's default when asked, without a
    dict of all the keys."""
    values = {}
    if given is None:
        given = {}
    if not isinstance(given, dict):
        return _Checked(values), ["settings must be a JSON object of name: value pairs"]
    found = []
    for key in given:
        got = None
        if isinstance(key, str) and key:
            for p, i, j in _lines(key):
                row = _row(p[i:j])
                if row[0] == key:  # a "key" with spaces in it could match a line's middle
                    got = _check(row, given[key])
        if got is None or isinstance(got, str) and got[:1] == "!":
            found.append((key, given[key], got and got[1:]))
        else:
            values[key] = got
    s = _Checked(values)
    if not found:
        _rules(s, found)
    if not found:
        return s, []
    import sys

    import firmware
    from firmware import cue_messages

    n = len(found) - 5
    errors = cue_messages.say(found[:5], s)  # the first few: a reply is read by a person
    if n > 0:
        errors.append("and %d more" % n)
    # Its texts are needed only here: dropped at once, before the caller builds its reply in
    # the headset's little free heap (CPython imports it again when it is next needed).
    sys.modules.pop("firmware.cue_messages", None)
    if hasattr(firmware, "cue_messages"):
        delattr(firmware, "cue_messages")
    return s, errors


def validate_settings(given):
    """(settings, errors). `settings` is every key, with each valid given value applied and
    the default kept for each invalid one; apply it only when `errors` is empty (a device
    keeps its current settings and reports the errors)."""
    c, errors = checked(given)
    s = defaults()
    s.update(c.values)
    return s, errors


def windows(seconds, hop_s):
    """How many windows `seconds` spans at `hop_s` (at least 1), robust to float error."""
    n = int(seconds / hop_s + 0.5)
    return n if n > 0 else 1
