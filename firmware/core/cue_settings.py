# Cue-policy settings: one table of rows and one validator that the Pi agent, the ESP32
# firmware and the companion's config editor all share. Portable: runs unchanged on MicroPython
# and CPython (no dataclasses, no typing, no I/O).
#
# Why each default is what it is: docs/policy.md. On the headset this module is loaded at boot
# and when a config message arrives, and released after (firmware/headset/app.py _CHECKS): its
# table is data the heap holds only while a config is checked.

# One row a setting: name, type, default, min, max, unit, help. Types: num (a number from min
# to max), int (a whole number from min to max), duration (seconds from min to max that the
# policy counts in windows, so at least one hop_s long), bool, or choice:a,b,c (one of those
# strings). "-": none. Each row is a line of text, parsed when it is looked up (row(), rows()):
# on the headset a table of tuples would be ~15 KB of heap while a config is checked (each of
# its ~110 numbers a heap object, measured from the ROMFS image), where text stays in flash;
# and a line each, not one text, so loaded from a folder no block of it is large.
# fmt: off
_TABLE = (
    "hop_s num 0.25 0.05 2.0 s time between two windows",
    "min_speech num 0.4 0.05 1.0 fraction speech in a window for it to count",
    "smoothing choice:median,ema,none median - - - how scores are smoothed",
    "smoothing_windows int 3 1 15 windows length of the median",
    "ema_alpha num 0.5 0.05 1.0 - weight of a new score in the EMA",
    "stress_threshold num 0.6 0.3 0.95 score stressed at or above this",
    "stress_rise num 0.35 0.0 0.9 score stressed: this far above the own calm level",
    "empathize_after_s duration 1.5 0.25 10.0 s stressed speech before the empathy nudge",
    "empathize_refractory_s num 20.0 0.0 600.0 s least time between two empathy nudges",
    "manager_after_s duration 6.0 1.0 120.0 s further stressed speech that calls the manager",
    "manager_rise num 0.15 0.05 0.5 score rise since the empathy nudge that calls the manager",
    "manager_rise_s duration 1.0 0.25 10.0 s how long that rise lasts",
    "intense_threshold num 0.9 0.5 1.0 score very intense at or above this",
    "stress_louder_db num 3.5 0.0 30.0 dB voice raised this far above its own calm level for stress",
    "intense_after_s duration 1.0 0.25 10.0 s very intense speech that calls the manager at once",
    "settle_margin num 0.1 0.0 0.4 score back within this of the calm level",
    "settle_after_s duration 2.0 0.25 60.0 s calm speech before the all-clear",
    "settle_quiet_s num 10.0 0.0 600.0 s no stressed speech this long before the all-clear",
    "baseline_s duration 2.0 0.25 30.0 s the customer's first speech: calm level",
    "baseline_default num 0.3 0.0 0.9 score calm level until it is known",
    "baseline_max num 0.4 0.0 0.9 score highest calm level",
    "tense_threshold num 0.5 0.1 0.95 score tense at or above this",
    "slow_down_after_s duration 1.0 0.25 10.0 s staff speech before the pace nudge",
    "slow_down_refractory_s num 15.0 0.0 600.0 s least time between two pace nudges",
    "pace_min_speech num 0.6 0.05 1.0 fraction speech in a window for its pace",
    "pace_window_s duration 2.0 0.25 10.0 s running average of pace and level",
    "speaker_baseline_s duration 2.0 0.25 30.0 s each voice's first speech: its pace",
    "rate_rise num 0.8 0.1 5.0 onsets/s faster than own start: rising",
    "rate_margin num 0.3 0.0 5.0 onsets/s staff faster than the customer by this",
    "level_rise_db num 4.0 1.0 30.0 dB louder than own start: rising",
    "level_margin_db num 3.0 0.0 30.0 dB staff louder than the customer by this",
    "cue_budget int 4 0 50 cues nudges in one conversation at most",
    "min_gap_s num 3.0 0.0 60.0 s least time between two nudges",
    "conversation_gap_s num 8.0 2.0 600.0 s silence that ends a conversation",
    "attribution choice:counter,headset,none counter - - - who is talking",
    "stress_from_unknown bool false - - - an unknown voice's stress counts",
    "eu_mode bool false - - - infer nothing about the staff voice",
    "headset_wearer_db num -30.0 -80.0 0.0 dBFS the wearer's level at start",
    "near_field_db num 12.0 3.0 40.0 dB wearer louder than others by this",
    "pitch_tol_st num 3.0 0.5 12.0 semitones staff pitch within this",
    "level_tol_db num 6.0 1.0 30.0 dB staff level within this",
    "enrol_min_s num 5.0 2.0 60.0 s voiced speech an enrolment needs",
)
# fmt: on


class SettingsError(ValueError):
    pass


def row(name):
    """The row of setting `name` (name, type, default, min, max, unit, help), or None. A choice's
    type is the tuple of its options."""
    if not isinstance(name, str):
        return None
    for line in _TABLE:
        if line.find(" ") == len(name) and line.startswith(name):
            break
    else:
        return None
    name, kind, default, lo, hi, unit, help_ = line.split(None, 6)
    if kind == "bool":
        return name, kind, default == "true", None, None, "", help_
    if kind.startswith("choice:"):
        return name, tuple(kind[7:].split(",")), default, None, None, "", help_
    num = int if kind == "int" else float
    return name, kind, num(default), num(lo), num(hi), "" if unit == "-" else unit, help_


def rows():
    """Every row, in table order, one parsed at a time."""
    for line in _TABLE:
        yield row(line[: line.find(" ")])


def _fmt(x):
    if isinstance(x, float) and x == int(x):
        return str(int(x))
    return str(x)


def _check(r, value):
    """(value to store, None) or (None, why it is refused, in words) for row `r`."""
    name, kind, default, lo, hi, unit, _ = r
    if kind == "bool":
        if value is True or value is False:
            return value, None
        return None, "%s must be true or false (got %r)" % (name, value)
    if not isinstance(kind, str):
        if value in kind:
            return value, None
        return None, "%s must be one of %s (got %r)" % (name, ", ".join(kind), value)
    if value is True or value is False or not isinstance(value, (int, float)):
        return None, "%s must be a number in %s (got %r); the default is %s" % (
            name, unit or "plain units", value, _fmt(default))  # fmt: skip
    if value != value:
        return None, "%s must be a number, not NaN; the default is %s" % (name, _fmt(default))
    if kind == "int" and value != int(value):
        return None, "%s must be a whole number (got %r); the default is %s" % (
            name, value, default)  # fmt: skip
    if not lo <= value <= hi:
        return None, "%s must be between %s and %s %s (got %s); the default is %s" % (
            name, _fmt(lo), _fmt(hi), unit, _fmt(value), _fmt(default))  # fmt: skip
    return (int(value) if kind == "int" else float(value)), None


def _unknown(name):
    # Why `name` is refused, with the known name sharing most letter pairs with it
    # ("empathise_after_s": did you mean "empathize_after_s"?).
    best = None
    if isinstance(name, str):
        pairs = set(name[i : i + 2] for i in range(len(name) - 1))
        best_n = 1
        for r in rows():
            n = 0
            for p in pairs:
                if p in r[0]:
                    n += 1
            if n > best_n:
                best, best_n = r[0], n
    if best:
        return "unknown setting %r; did you mean %r?" % (name, best)
    return "unknown setting %r" % (name,)


def _rules(s, out):
    # The rules between settings: which value to move, and why it matters.
    stress = s["stress_threshold"]
    if s["intense_threshold"] <= stress:
        out.append(
            "intense_threshold (%s) must be above stress_threshold (%s): 'very intense' skips "
            "empathize and calls the manager at once; raise intense_threshold or lower "
            "stress_threshold" % (_fmt(s["intense_threshold"]), _fmt(stress))
        )
    if s["tense_threshold"] > stress:
        out.append(
            "tense_threshold (%s) must not be above stress_threshold (%s): a conversation is "
            "tense before the customer is stressed enough for empathize; lower "
            "tense_threshold" % (_fmt(s["tense_threshold"]), _fmt(stress))
        )
    if s["baseline_max"] + s["settle_margin"] >= stress:
        out.append(
            "baseline_max + settle_margin (%s) must stay below stress_threshold (%s), or a "
            "conversation could count as settled while still stressed; lower baseline_max or "
            "settle_margin" % (_fmt(s["baseline_max"] + s["settle_margin"]), _fmt(stress))
        )
    if s["baseline_default"] > s["baseline_max"]:
        out.append(
            "baseline_default (%s) must not be above baseline_max (%s); lower "
            "baseline_default" % (_fmt(s["baseline_default"]), _fmt(s["baseline_max"]))
        )
    hop = s["hop_s"]
    for r in rows():
        if r[1] == "duration" and s[r[0]] < hop:
            out.append(
                "%s (%s s) is shorter than one window hop (hop_s = %s s); use at least %s"
                % (r[0], _fmt(s[r[0]]), _fmt(hop), _fmt(hop))
            )
    if s["conversation_gap_s"] < 4 * hop:
        out.append(
            "conversation_gap_s must be at least 4 window hops (%s s) so a pause between words "
            "does not end the conversation" % _fmt(4 * hop)
        )
    if s["eu_mode"] and s["stress_from_unknown"]:
        out.append(
            "stress_from_unknown must be false in EU mode: an unattributed voice may be the staff "
            "member's, and EU mode infers nothing about the staff voice; set it to false"
        )


class _Checked:
    """What checked() returns: `[name]` gives the checked given value, else the default. No
    dict of all the settings is made (the headset checks a config in a heap that may have no
    room for one block of that size)."""

    def __init__(self, values):
        self.values = values

    def __getitem__(self, name):
        if name in self.values:
            return self.values[name]
        r = row(name)
        if r is None:
            raise KeyError(name)
        return r[2]


def checked(given):
    """(settings, errors) as validate_settings gives them, for code that only reads
    `settings[name]` (the policy, the attribution, the headset's config check). At most the
    first five problems are named, then "and N more": a reply is read by a person."""
    values = {}
    if given is None:
        given = {}
    if not isinstance(given, dict):
        return _Checked(values), ["settings must be a JSON object of name: value pairs"]
    errors = []
    for name in given:
        r = row(name)
        if r is None:
            errors.append(_unknown(name))
            continue
        value, why = _check(r, given[name])
        if why is None:
            values[name] = value
        else:
            errors.append(why)
    s = _Checked(values)
    if not errors:
        _rules(s, errors)
    if len(errors) > 5:
        errors[5:] = ["and %d more" % (len(errors) - 5)]
    return s, errors


def defaults():
    """A fresh dict of every setting at its default."""
    return {r[0]: r[2] for r in rows()}


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
