# The fix-it messages of firmware/cue_settings.py. A module of their own: the headset loads it
# only when a config has something wrong; a valid config (the retained one arrives on every
# reconnect) loads cue_settings alone, in a heap that may have little room for both.
from firmware.cue_settings import _lines, _row


def _fmt(x):
    if isinstance(x, float) and x == int(x):
        return str(int(x))
    return str(x)


def _closest(key):
    # The known key sharing most letter pairs with a misspelt one ("empathise_after_s"): the
    # most of the misspelt key's distinct letter pairs found in a key's name, nothing sliced
    # per key.
    kb = set(key[i : i + 2] for i in range(len(key) - 1))
    best, best_n = None, 1
    for p, i, _ in _lines():
        k = p.find(" ", i)
        n = 0
        for b in kb:
            if p.find(b, i, k) >= 0:
                n += 1
        if n > best_n:
            best, best_n = p[i:k], n
    return best


def _value(key, value, code):
    # A given value that cue_settings._check refused, `code` says why.
    if code is None:
        hint = _closest(key) if isinstance(key, str) else None
        if hint:
            return "unknown setting %r; did you mean %r?" % (key, hint)
        return "unknown setting %r" % (key,)
    for p, i, j in _lines(key):
        key, default, limits, unit = _row(p[i:j])
    if code == "b":
        return "%s must be true or false (got %r)" % (key, value)
    if code == "c":
        return "%s must be one of %s (got %r)" % (key, ", ".join(limits), value)
    if code == "n":
        return "%s must be a number in %s (got %r); the default is %s" % (
            key,
            unit or "plain units",
            value,
            _fmt(default),
        )
    if code == "N":
        return "%s must be a number, not NaN; the default is %s" % (key, _fmt(default))
    if code == "w":
        return "%s must be a whole number (got %r); the default is %s" % (key, value, default)
    return "%s must be between %s and %s %s (got %s); the default is %s" % (
        key,
        _fmt(limits[0]),
        _fmt(limits[1]),
        unit,
        _fmt(value),
        _fmt(default),
    )


def _rule(code, s):
    # A rule between settings that cue_settings._rules found broken: which one to move and why
    # it matters.
    stress = _fmt(s["stress_threshold"])
    hop = _fmt(s["hop_s"])
    if code == "i":
        return (
            "intense_threshold (%s) must be above stress_threshold (%s): 'very intense' skips "
            "empathize and calls the manager at once; raise intense_threshold or lower "
            "stress_threshold" % (_fmt(s["intense_threshold"]), stress)
        )
    if code == "t":
        return (
            "tense_threshold (%s) must not be above stress_threshold (%s): a conversation is "
            "tense before the customer is stressed enough for empathize; lower "
            "tense_threshold" % (_fmt(s["tense_threshold"]), stress)
        )
    if code == "s":
        return (
            "baseline_max + settle_margin (%s) must stay below stress_threshold (%s), or a "
            "conversation could count as settled while still stressed; lower baseline_max or "
            "settle_margin" % (_fmt(s["baseline_max"] + s["settle_margin"]), stress)
        )
    if code == "d":
        return (
            "baseline_default (%s) must not be above baseline_max (%s); lower "
            "baseline_default" % (_fmt(s["baseline_default"]), _fmt(s["baseline_max"]))
        )
    if code == "g":
        return (
            "conversation_gap_s must be at least 4 window hops (%s s) so a pause between words "
            "does not end the conversation" % _fmt(4 * s["hop_s"])
        )
    if code == "e":
        return (
            "stress_from_unknown must be false in EU mode: an unattributed voice may be the staff "
            "member's, and EU mode infers nothing about the staff voice; set it to false"
        )
    # a duration shorter than one hop: the code is its key
    return "%s (%s s) is shorter than one window hop (hop_s = %s s); use at least %s" % (
        code,
        _fmt(s[code]),
        hop,
        hop,
    )


def say(found, s):
    """The messages for what cue_settings.checked found: (key, value, code) for a given value
    it refused (code None: an unknown key), a rule's code for a rule between settings."""
    out = []
    for f in found:
        out.append(_rule(f, s) if isinstance(f, str) else _value(f[0], f[1], f[2]))
    return out
